# Failures end cleanly and a restart continues the run (2 MPI ranks on the CPU):
#   - a rank killed mid-run ends the job non-zero within seconds, and scripts/supervise
#     restarts it with --resume auto: the losses equal an uninterrupted run's, bit for bit
#   - a rank that stops answering (SIGSTOP: alive but frozen) makes rank 0's watchdog end
#     the job after parallelism.collective_timeout_s, with one line naming rank 1 and what
#     it was last doing
#   - a rank making no progress for parallelism.progress_timeout_s reports a hang and exits
#   - the supervisor stops at a user error (exit 2) instead of retrying it
source "$(dirname "$0")/common.bash"
source "$(dirname "$0")/mpi.bash"
make_dataset "$SCRATCH/data"
data="data.sources=[{path=\"$SCRATCH/data\",weight=1.0}]"
# Enough steps that a rank can be caught mid-run; a checkpoint every 4.
run=(recipes/tiny/dense.toml --set "$data" --set train.steps=60 --set checkpoint.interval=4
     --set eval.interval=0 --set parallelism.collective_timeout_s=3 --set train.threads=1)

# wait_for SECONDS COMMAND...: polls COMMAND until it succeeds; fails after SECONDS.
wait_for() {
  local deadline=$((SECONDS + $1)); shift
  until "$@"; do
    (( SECONDS < deadline )) || return 1
    sleep 0.02
  done
}
rows_at_least() { [[ -f $1 && $(grep -c '"loss"' "$1") -ge $2 ]]; }
rank1_pid() { cut -f2 "$1/heartbeat/rank_00001"; }

mpi 2 "$SIGMA" train "${run[@]}" --out "$SCRATCH/straight" > /dev/null

# 1. kill -9 of rank 1 at step >= 10, under the supervisor.
scripts/supervise --max-restarts 2 --delay 0 -- mpirun -np 2 --oversubscribe --bind-to none \
  "$SIGMA" train "${run[@]}" --out "$SCRATCH/killed" > "$SCRATCH/killed.out" 2> "$SCRATCH/killed.err" &
supervisor=$!
wait_for 120 rows_at_least "$SCRATCH/killed/metrics.jsonl" 10 || die "the run did not reach step 10"
victim=$(rank1_pid "$SCRATCH/killed")
kill -STOP "$victim"  # freeze it first, so the run cannot finish before the kill lands
killed_at=$(grep -c '"loss"' "$SCRATCH/killed/metrics.jsonl")
kill -KILL "$victim"
start=$SECONDS
wait_for 20 grep -q "supervise: attempt 1 ended with exit" "$SCRATCH/killed.err" \
  || die "no clean failure within 20 s of the kill: $(cat "$SCRATCH/killed.err")"
echo "ok: rank 1 (pid $victim) killed after step $killed_at; the job ended within $((SECONDS - start)) s:" \
  "$(grep -a "supervise: attempt 1" "$SCRATCH/killed.err")"
wait "$supervisor" || die "the supervised run failed: $(tail -5 "$SCRATCH/killed.err")"
grep -q "supervise: completed on attempt 2" "$SCRATCH/killed.err" || die "no second attempt"
grep -aq "resumed from .*step_000000" "$SCRATCH/killed.out" || die "the second attempt did not resume"
same_losses "$SCRATCH/straight/metrics.jsonl" "$SCRATCH/killed/metrics.jsonl" 0 \
  "killed at step $killed_at and resumed vs uninterrupted"

# 2. rank 1 frozen: rank 0 times out in its collective and names it.
rc=0
mpi 2 "$SIGMA" train "${run[@]}" --out "$SCRATCH/hung" > /dev/null 2> "$SCRATCH/hung.err" &
job=$!
wait_for 120 rows_at_least "$SCRATCH/hung/metrics.jsonl" 10 || die "the run did not reach step 10"
victim=$(rank1_pid "$SCRATCH/hung")
kill -STOP "$victim"
start=$SECONDS
wait "$job" || rc=$?
kill -CONT "$victim" 2> /dev/null || true
[[ $rc -ne 0 ]] || die "the job with a frozen rank exited 0"
(( SECONDS - start <= 15 )) || die "the frozen rank was noticed after $((SECONDS - start)) s (timeout 3 s)"
line=$(grep -a "^sigma: rank 0: no answer for" "$SCRATCH/hung.err" || true)
[[ "$line" == *"parallelism.collective_timeout_s"* && "$line" == *"rank 1 (pid $victim on "*"has been silent"* ]] \
  || die "no watchdog line naming rank 1: $(cat "$SCRATCH/hung.err")"
echo "ok: exit $rc after $((SECONDS - start)) s: $line"

# 3. A rank stuck in one phase longer than progress_timeout_s.
rc=0
"$SIGMA" train "${run[@]}" --set parallelism.progress_timeout_s=0.001 --out "$SCRATCH/slow" \
  > /dev/null 2> "$SCRATCH/slow.err" || rc=$?
[[ $rc -eq 4 ]] || die "a hang exited $rc, not 4: $(cat "$SCRATCH/slow.err")"
grep -q "^sigma: rank 0: no progress for .* (parallelism.progress_timeout_s) in .*: this rank hangs" \
  "$SCRATCH/slow.err" || die "no hang line: $(cat "$SCRATCH/slow.err")"
echo "ok: $(cat "$SCRATCH/slow.err")"

# 4. The supervisor does not retry a user error: it cannot fix itself.
rc=0
scripts/supervise --delay 0 -- "$SIGMA" train "${run[@]}" --set train.steps=abc --out "$SCRATCH/bad" \
  > /dev/null 2> "$SCRATCH/bad.err" || rc=$?
[[ $rc -eq 2 ]] && grep -q "user error (exit 2); not restarting" "$SCRATCH/bad.err" \
  || die "supervise on a user error: exit $rc, $(cat "$SCRATCH/bad.err")"
echo "ok: $(tail -1 "$SCRATCH/bad.err")"
