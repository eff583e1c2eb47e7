#!/usr/bin/env bash
# build.sh BUILD_DIR: compiles dev/grouped_matmul/bench_tiles.cu into BUILD_DIR/bench_tiles,
# linked against that CUDA build's libraries (build `sigma_core` there first).
set -euo pipefail
build=$(realpath "$1")
cd "$(dirname "$0")/../.."
nvcc -std=c++17 -O3 -DNDEBUG -DFMT_SHARED -DSIGMA_CUDA=1 --expt-relaxed-constexpr \
  -gencode=arch=compute_90a,code=sm_90a -I. dev/grouped_matmul/bench_tiles.cu \
  -o "$build/bench_tiles" "$build/libsigma_core.a" "$build/libsigma_kernels.a" ${EXTRA_OBJECTS:-} \
  -lcublasLt -lfmt -lopenblas -lgomp
