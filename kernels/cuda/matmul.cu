// Bias-free Linear on CUDA through cuBLASLt: bf16 (or fp32) operands, fp32 accumulation.
//
// Row-major tensors are column-major transposes, so out [N, O] = inp [N, I] @ W[O, I]^T is
// the column-major product out^T = W^T' inp^T with W read transposed. The weight gradient
// is written straight into the fp32 gradient, with beta = 1 to accumulate micro-batches
// without a temporary, or beta = 0 to overwrite (ops.h, GradWrite); an input gradient may
// likewise be added into (beta = 1 on bf16: the sum is rounded once). TF32 is never used: fp32
// operands get a true fp32 product, which the parity tests rely on.
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/runtime.h"

#include <map>
#include <mutex>
#include <tuple>

namespace sigma::cuda {
namespace {

cudaDataType_t cuda_type(DType dtype) {
  return dtype == DType::kBF16 ? CUDA_R_16BF : CUDA_R_32F;
}

// One column-major product D (m x n) = op(A) op(B) (+ beta D), with its descriptors and the
// heuristic's algorithm, built once per shape and reused for the run.
struct GemmKey {
  bool trans_a, trans_b;
  int64_t m, n, k;
  DType a, b, d;
  bool accumulate;
  auto tie() const { return std::tie(trans_a, trans_b, m, n, k, a, b, d, accumulate); }
  bool operator<(const GemmKey& o) const { return tie() < o.tie(); }
};

struct GemmPlan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
};

GemmPlan make_plan(const GemmKey& key) {
  GemmPlan p;
  SIGMA_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  cublasOperation_t ta = key.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  cublasOperation_t tb = key.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  SIGMA_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
  SIGMA_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
  // Stored (column-major) shapes: A is m x k, or k x m when transposed; B likewise.
  int64_t a_rows = key.trans_a ? key.k : key.m, a_cols = key.trans_a ? key.m : key.k;
  int64_t b_rows = key.trans_b ? key.n : key.k, b_cols = key.trans_b ? key.k : key.n;
  SIGMA_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.a, cuda_type(key.a), a_rows, a_cols, a_rows));
  SIGMA_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.b, cuda_type(key.b), b_rows, b_cols, b_rows));
  SIGMA_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.d, cuda_type(key.d), key.m, key.n, key.m));
  cublasLtMatmulPreference_t pref;
  SIGMA_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  size_t workspace = kCublasLtWorkspaceBytes;
  SIGMA_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace, sizeof(workspace)));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  SIGMA_CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(cublaslt(), p.op, p.a, p.b, p.d, p.d, pref, 1,
                                                    &result, &found));
  cublasLtMatmulPreferenceDestroy(pref);
  if (found == 0)
    fail("cuBLASLt has no algorithm for a {}x{}x{} product ({} x {} -> {})", key.m, key.n, key.k,
         dtype_name(key.a), dtype_name(key.b), dtype_name(key.d));
  p.algo = result.algo;
  return p;
}

void gemm(const GemmKey& key, const void* a, const void* b, void* d) {
  static std::mutex mutex;
  static std::map<GemmKey, GemmPlan> plans;
  const GemmPlan* plan;
  {
    std::lock_guard<std::mutex> lock(mutex);
    auto it = plans.find(key);
    if (it == plans.end()) it = plans.emplace(key, make_plan(key)).first;
    plan = &it->second;
  }
  float alpha = 1.0f, beta = key.accumulate ? 1.0f : 0.0f;
  SIGMA_CUBLAS_CHECK(cublasLtMatmul(cublaslt(), plan->op, &alpha, a, plan->a, b, plan->b, &beta,
                                    d, plan->d, d, plan->d, &plan->algo, cublaslt_workspace(),
                                    kCublasLtWorkspaceBytes, stream()));
}

}  // namespace

// out^T [O, N] = W^T' [O, I] . inp^T [I, N]:  A = W (stored I x O), transposed.
void matmul_forward(Tensor out, Tensor inp, Tensor weight) {
  int64_t o = weight.size(0), i = weight.size(1), n = inp.numel() / i;
  if (n == 0) return;
  gemm({true, false, o, n, i, weight.dtype, inp.dtype, out.dtype, false}, weight.data, inp.data,
       out.data);
}

void matmul_backward(Tensor d_inp, Tensor d_weight, Tensor d_out, Tensor inp, Tensor weight,
                     GradWrite write, GradWrite input_write) {
  int64_t o = weight.size(0), i = weight.size(1), n = inp.numel() / i;
  const bool accumulate = write == GradWrite::kAccumulate;
  if (n == 0) {  // no rows: a zero gradient
    if (!accumulate)
      SIGMA_CUDA_CHECK(cudaMemsetAsync(d_weight.data, 0, d_weight.bytes(), stream()));
    return;
  }
  // d_inp^T [I, N] (+)= W^T [I, O] (stored as is) . d_out^T [O, N].
  if (d_inp.defined())
    gemm({false, false, i, n, o, weight.dtype, d_out.dtype, d_inp.dtype,
          input_write == GradWrite::kAccumulate},
         weight.data, d_out.data, d_inp.data);
  // d_W^T [I, O] (+)= inp^T [I, N] . d_out [N, O]  (B = d_out^T stored O x N, transposed).
  gemm({false, true, i, o, n, inp.dtype, d_out.dtype, DType::kF32, accumulate}, inp.data,
       d_out.data, d_weight.data);
}

}  // namespace sigma::cuda
