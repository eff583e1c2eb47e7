# Helpers for the multi-rank integration tests (sourced after common.bash, not a test itself).
# Ranks run on this one machine, oversubscribed (CI has 2 cores), over shared memory only.

# CI runs as root: OpenMPI refuses that unless told.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# One node: shared memory and self only (no network probing); no single-copy (CMA) transfers,
# which containers often forbid (ptrace).
export OMPI_MCA_btl=self,vader OMPI_MCA_btl_vader_single_copy_mechanism=none
# Under AddressSanitizer (scripts/test --sanitize): OpenMPI unloads its plugins (dlopen'ed MCA
# components) before LeakSanitizer reports, so their by-design leaks show up unsymbolized and
# cannot be suppressed by name. Leak checking is off for the ranks; every other ASan and
# UBSan check stays on, and the single-process tests keep leak checking.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"  # read by ASan builds only
command -v mpirun > /dev/null || die "mpirun not found: scripts/setup installs openmpi-bin"

# mpi N ARGS...: ARGS on N ranks.
mpi() {
  local n=$1; shift
  mpirun -np "$n" --oversubscribe --bind-to none "$@"
}

# same_losses A B TOLERANCE WHAT: the loss rows of two metrics.jsonl, step by step, within a
# relative TOLERANCE (0: bit for bit). Prints the largest relative difference.
same_losses() {
  /usr/bin/python3 - "$@" <<'PY'
import json, sys
a, b, tol, what = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
def losses(path):
    return {r["step"]: r["loss"] for r in map(json.loads, open(path)) if "loss" in r}
la, lb = losses(a), losses(b)
if sorted(la) != sorted(lb):
    sys.exit(f"FAIL: {what}: steps differ: {sorted(la)} vs {sorted(lb)}")
worst = max(abs(la[s] - lb[s]) / abs(la[s]) for s in la)
if worst > tol:
    sys.exit(f"FAIL: {what}: largest relative loss difference {worst:.3g} > {tol:g}")
print(f"ok: {what}: {len(la)} steps, largest relative loss difference {worst:.3g}"
      f" (allowed {tol:g})")
PY
}
