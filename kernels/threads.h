// CPU threading for the kernels: OpenMP loops and OpenBLAS use the same thread count, fixed
// for a run (the CPU reductions' order, and so bit-exact resume, depends on it).
#pragma once

namespace sigma {

// n <= 0 means all cores. Returns the count in use.
int set_cpu_threads(int n);

}  // namespace sigma
