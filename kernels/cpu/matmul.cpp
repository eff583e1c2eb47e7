// Bias-free Linear on the CPU: OpenBLAS sgemm.
//
// One thread pool should drive the cores: when OpenBLAS runs single-threaded (the setting
// sigma::set_cpu_threads should make), each OpenMP thread multiplies its own block of output
// rows with its own sgemm call. Two pools (OpenMP for the other ops, OpenBLAS's pthreads for
// the matmuls) spin against each other on the same cores between ops; on 2 cores that made
// training of the 6.5M-parameter bench model up to ~1.5x slower. When OpenBLAS does have
// threads (a caller that never set them), it splits each call itself. Either way the split
// is over output rows, never over the inner dimension, so every run gives the same bits.
#include "kernels/cpu/cpu_ops.h"

#include <cblas.h>
#include <omp.h>

namespace sigma::cpu {
namespace {

struct Rows {
  int begin, end;
  int count() const { return end - begin; }
};

// This OpenMP thread's share of n rows; the whole range outside a parallel region.
Rows my_rows(int n) {
  int64_t threads = omp_get_num_threads(), id = omp_get_thread_num();
  return {int(n * id / threads), int(n * (id + 1) / threads)};
}

// Whether OpenMP should split the matmul (OpenBLAS is single-threaded) or leave it to OpenBLAS.
bool split_over_openmp() { return openblas_get_num_threads() == 1; }

}  // namespace

// out [N, O] = inp [N, I] @ weight [O, I]^T
void matmul_forward(Tensor out, Tensor inp, Tensor weight) {
  const int o = int(weight.size(0)), i = int(weight.size(1)), n = int(inp.numel() / i);
  const float *x = inp.f32(), *w = weight.f32();
  float* y = out.f32();
#pragma omp parallel if (split_over_openmp())
  {
    Rows r = my_rows(n);
    if (r.count() > 0)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r.count(), o, i, 1.0f,
                  x + int64_t(r.begin) * i, i, w, i, 0.0f, y + int64_t(r.begin) * o, o);
  }
}

void matmul_backward(Tensor d_inp, Tensor d_weight, Tensor d_out, Tensor inp, Tensor weight,
                     GradWrite write, GradWrite input_write) {
  const int o = int(weight.size(0)), i = int(weight.size(1)), n = int(inp.numel() / i);
  const float *x = inp.f32(), *w = weight.f32(), *dy = d_out.f32();
  float* dw = d_weight.f32();
  float* dx = d_inp.defined() ? d_inp.f32() : nullptr;
  const float beta = write == GradWrite::kAccumulate ? 1.0f : 0.0f;
  const float input_beta = input_write == GradWrite::kAccumulate ? 1.0f : 0.0f;
#pragma omp parallel if (split_over_openmp())
  {
    // d_inp [N, I] (+)= d_out [N, O] @ weight [O, I], by rows of N.
    Rows r = my_rows(n);
    if (dx && r.count() > 0)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, r.count(), i, o, 1.0f,
                  dy + int64_t(r.begin) * o, o, w, i, input_beta, dx + int64_t(r.begin) * i, i);
    // d_weight [O, I] += d_out^T [O, N] @ inp [N, I], by rows of O; beta = 1 accumulates
    // micro-batches (0 overwrites), and each row still sums over all N tokens in one call.
    Rows c = my_rows(o);
    if (c.count() > 0)
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, c.count(), i, n, 1.0f, dy + c.begin, o,
                  x, i, beta, dw + int64_t(c.begin) * i, i);
  }
}

}  // namespace sigma::cpu
