// CPU threading for the kernels: one OpenMP pool, fixed for a run.
//
// OpenBLAS is kept single-threaded: kernels/cpu/matmul.cpp splits each product into row
// blocks over the OpenMP threads itself. Two pools on the same cores (OpenMP's and
// OpenBLAS's own) spent much of a step spinning and yielding between them.
#pragma once

namespace sigma {

// n <= 0 means all cores. Returns the count in use.
int set_cpu_threads(int n);

}  // namespace sigma
