#!/usr/bin/env bash
# build.sh BUILD_DIR: compiles dev/memory_bound/bench_memory_bound.cu into
# BUILD_DIR/bench_memory_bound, linked against that CUDA build's libraries (build
# `sigma_core` and `sigma_kernels` there first).
set -euo pipefail
build=$(realpath "$1")
cd "$(dirname "$0")/../.."
nvcc -std=c++17 -O3 -DNDEBUG -DFMT_SHARED -DSIGMA_CUDA=1 --expt-relaxed-constexpr \
  -gencode=arch=compute_90a,code=sm_90a -I. dev/memory_bound/bench_memory_bound.cu \
  -o "$build/bench_memory_bound" "$build/libsigma_core.a" "$build/libsigma_kernels.a" \
  -lcublasLt -lfmt -lopenblas -lgomp
