#!/usr/bin/env bash
# run_device.sh: one device call's worth of attention work (dev/attention/NOTES.md), from
# binaries packed into .gpu-attn: the parity tests and the bench against SDPA for the
# mma.sync and the wgmma kernels, memcheck, and per-kernel figures from Nsight Compute.
# Logs go to $OUT.
set -uo pipefail
source .gpu-attn/env.sh
out=${OUT:-/tmp/attention-run}
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu --format=csv,noheader
for impl in wgmma; do
  echo "== tests ($impl)"
  timeout 60 attn_tests_$impl -s 2>&1 | tee "$out/tests_$impl.log" |
    grep -E "MESSAGE|differs|ERROR|FAIL|test cases|Status" | cut -c40-250
done
for bench in bench_attention bench_attention_wgmma bench_attention_wgmma_n64; do
  echo "== $bench"
  timeout 40 $bench 2>&1 | tee "$out/$bench.log" | tail -4
done
echo "== memcheck (wgmma)"
timeout 40 compute-sanitizer --tool memcheck --error-exitcode 9 attn_tests_wgmma > "$out/memcheck_wgmma.log" 2>&1
echo "memcheck rc=$?"; tail -1 "$out/memcheck_wgmma.log"
echo "== ncu (first shape: one forward, then dq and dkdv)"
timeout 60 "$(command -v ncu || echo /usr/local/cuda/bin/ncu)" --clock-control none --launch-skip 22 --launch-count 4 \
  --section SpeedOfLight bench_attention_wgmma > "$out/ncu.log" 2>&1
echo "ncu rc=$?"
grep -E "attention_|Duration|SM Throughput|Memory Throughput|Compute \(SM\)" "$out/ncu.log" | cut -c1-120 | head -40
