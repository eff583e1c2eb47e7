// Bias-free Linear on the CPU: three calls to OpenBLAS sgemm.
//
// OpenBLAS threads these itself (sigma::set_cpu_threads sets its count); its sgemm splits
// the output, never the inner dimension, so the result is the same bits on every run.
#include "kernels/cpu/cpu_ops.h"

#include <cblas.h>

namespace sigma::cpu {

// out [N, O] = inp [N, I] @ weight [O, I]^T
void matmul_forward(Tensor out, Tensor inp, Tensor weight) {
  int o = int(weight.size(0)), i = int(weight.size(1));
  int n = int(inp.numel() / i);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, o, i, 1.0f, inp.f32(), i, weight.f32(),
              i, 0.0f, out.f32(), o);
}

void matmul_backward(Tensor d_inp, Tensor d_weight, Tensor d_out, Tensor inp, Tensor weight) {
  int o = int(weight.size(0)), i = int(weight.size(1));
  int n = int(inp.numel() / i);
  // d_inp [N, I] = d_out [N, O] @ weight [O, I]
  if (d_inp.defined())
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, i, o, 1.0f, d_out.f32(), o,
                weight.f32(), i, 0.0f, d_inp.f32(), i);
  // d_weight [O, I] += d_out^T [O, N] @ inp [N, I]; beta = 1 accumulates micro-batches.
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, o, i, n, 1.0f, d_out.f32(), o, inp.f32(),
              i, 1.0f, d_weight.f32(), i);
}

}  // namespace sigma::cpu
