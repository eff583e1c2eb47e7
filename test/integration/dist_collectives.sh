# The process-group collectives and the expert-parallel MoE layer on real MPI ranks: the
# "dist: world" unit tests (test/test_dist.cpp) under mpirun with 2 and 4 ranks.
source "$(dirname "$0")/common.bash"
source "$(dirname "$0")/mpi.bash"
tests=$(dirname "$SIGMA")/test/sigma_tests
[[ -x $tests ]] || die "no $tests beside the sigma binary"
for n in 2 4; do
  mpi "$n" "$tests" -tc='dist: world*' --no-colors > "$SCRATCH/np$n.out" 2>&1 \
    || { cat "$SCRATCH/np$n.out"; die "dist: world tests failed on $n ranks"; }
  passed=$(grep -ac "test cases: *2 | *2 passed" "$SCRATCH/np$n.out" || true)
  [[ $passed -eq $n ]] || { cat "$SCRATCH/np$n.out"; die "expected $n ranks to pass 2 test cases"; }
  echo "ok: collectives and expert-parallel MoE on $n ranks"
done
