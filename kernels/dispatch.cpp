// dispatch.cpp: sigma::ops::* checks shapes and dtypes, then routes on the tensors' device.
//
// The backends (kernels/cpu, kernels/cuda) assume what is checked here: matching shapes,
// one device per call, fp32 on the CPU (fp32 or bf16 activations on CUDA, fp32 where ops.h
// says so). A failed check is a bug in the caller, hence SIGMA_CHECK. Data values (token
// ids, targets) are checked by the backends, which can see them.
#include "kernels/ops.h"

#include "kernels/cpu/cpu_ops.h"
#ifdef SIGMA_CUDA
#include "kernels/cuda/cuda_ops.h"
#endif

#include <initializer_list>

namespace sigma::ops {
namespace {

// The device shared by an op's tensors; undefined (skipped) tensors do not count.
Device device_of(const char* op, std::initializer_list<Tensor> tensors) {
  const Tensor* first = nullptr;
  for (const Tensor& t : tensors) {
    if (!t.defined()) continue;
    if (!first) first = &t;
    SIGMA_CHECK(t.device == first->device, "{}: tensors on {} and {}", op,
                device_name(first->device), device_name(t.device));
  }
  SIGMA_CHECK(first != nullptr, "{}: every tensor is undefined", op);
  return first->device;
}

// Activations are fp32 on the CPU; the CUDA backend also stores them in bf16.
void check_float(Device device, const Tensor& t, const char* op, const char* name) {
  bool ok = t.dtype == DType::kF32 || (device == Device::kCuda && t.dtype == DType::kBF16);
  SIGMA_CHECK(ok, "{}: {} is {} on {}", op, name, dtype_name(t.dtype), device_name(device));
}

void check_dtype(const Tensor& t, DType dtype, const char* op, const char* name) {
  SIGMA_CHECK(t.dtype == dtype, "{}: {} is {}, needs {}", op, name, dtype_name(t.dtype),
              dtype_name(dtype));
}

void check_numel(const Tensor& t, int64_t numel, const char* op, const char* name) {
  SIGMA_CHECK(t.numel() == numel, "{}: {} {} has {} elements, needs {}", op, name, t.shape.str(),
              t.numel(), numel);
}

void check_shape(const Tensor& t, const Shape& shape, const char* op, const char* name) {
  SIGMA_CHECK(t.shape == shape, "{}: {} is {}, needs {}", op, name, t.shape.str(), shape.str());
}

[[noreturn]] void no_cuda(const char* op) {
  fail("{} needs the CUDA backend; this build has none", op);
}

}  // namespace

// Routes one call: `return cpu::op(...)` on the CPU, the CUDA twin (or a clear error) otherwise.
#ifdef SIGMA_CUDA
#define SIGMA_ROUTE(device, op, ...)                         \
  do {                                                       \
    if ((device) == Device::kCpu) return cpu::op(__VA_ARGS__); \
    return cuda::op(__VA_ARGS__);                            \
  } while (0)
#else
#define SIGMA_ROUTE(device, op, ...)                         \
  do {                                                       \
    if ((device) == Device::kCpu) return cpu::op(__VA_ARGS__); \
    no_cuda(#op);                                            \
  } while (0)
#endif

void embedding_forward(Tensor out, Tensor tokens, Tensor weight) {
  const char* op = "embedding_forward";
  Device dev = device_of(op, {out, tokens, weight});
  check_dtype(tokens, DType::kI32, op, "tokens");
  check_float(dev, weight, op, "weight");
  check_float(dev, out, op, "out");
  SIGMA_CHECK(weight.shape.rank == 2, "{}: weight is {}", op, weight.shape.str());
  check_numel(out, tokens.numel() * weight.size(1), op, "out");
  SIGMA_ROUTE(dev, embedding_forward, out, tokens, weight);
}

void embedding_backward(Tensor d_weight, Tensor d_out, Tensor tokens) {
  const char* op = "embedding_backward";
  Device dev = device_of(op, {d_weight, d_out, tokens});
  check_dtype(tokens, DType::kI32, op, "tokens");
  check_dtype(d_weight, DType::kF32, op, "d_weight");
  check_float(dev, d_out, op, "d_out");
  SIGMA_CHECK(d_weight.shape.rank == 2, "{}: d_weight is {}", op, d_weight.shape.str());
  check_numel(d_out, tokens.numel() * d_weight.size(1), op, "d_out");
  SIGMA_ROUTE(dev, embedding_backward, d_weight, d_out, tokens);
}

namespace {
// out [N, O] = inp [N, I] @ weight[O, I]^T, where inp and out may carry extra leading dims.
void check_matmul(Device dev, const char* op, const Tensor& out, const char* out_name,
                  const Tensor& inp, const Tensor& weight) {
  check_float(dev, out, op, out_name);
  check_float(dev, inp, op, "inp");
  check_float(dev, weight, op, "weight");
  SIGMA_CHECK(weight.shape.rank == 2, "{}: weight is {}", op, weight.shape.str());
  SIGMA_CHECK(inp.size(-1) == weight.size(1), "{}: inp {} against weight {}", op, inp.shape.str(),
              weight.shape.str());
  SIGMA_CHECK(out.size(-1) == weight.size(0), "{}: {} {} against weight {}", op, out_name,
              out.shape.str(), weight.shape.str());
  check_numel(out, inp.numel() / weight.size(1) * weight.size(0), op, out_name);
}
}  // namespace

void matmul_forward(Tensor out, Tensor inp, Tensor weight) {
  const char* op = "matmul_forward";
  Device dev = device_of(op, {out, inp, weight});
  check_matmul(dev, op, out, "out", inp, weight);
  SIGMA_ROUTE(dev, matmul_forward, out, inp, weight);
}

void matmul_backward(Tensor d_inp, Tensor d_weight, Tensor d_out, Tensor inp, Tensor weight) {
  const char* op = "matmul_backward";
  Device dev = device_of(op, {d_inp, d_weight, d_out, inp, weight});
  check_matmul(dev, op, d_out, "d_out", inp, weight);
  check_dtype(d_weight, DType::kF32, op, "d_weight");
  check_shape(d_weight, weight.shape, op, "d_weight");
  if (d_inp.defined()) {
    check_float(dev, d_inp, op, "d_inp");
    check_numel(d_inp, inp.numel(), op, "d_inp");
  }
  SIGMA_ROUTE(dev, matmul_backward, d_inp, d_weight, d_out, inp, weight);
}

namespace {
void check_rmsnorm(Device dev, const char* op, const Tensor& x, const char* x_name,
                   const Tensor& inp, const Tensor& weight, const Tensor& rstd) {
  check_float(dev, x, op, x_name);
  check_float(dev, inp, op, "inp");
  check_float(dev, weight, op, "weight");
  check_dtype(rstd, DType::kF32, op, "rstd");
  int64_t c = inp.size(-1);
  check_numel(weight, c, op, "weight");
  check_numel(x, inp.numel(), op, x_name);
  check_numel(rstd, inp.numel() / c, op, "rstd");
}
}  // namespace

void rmsnorm_forward(Tensor out, Tensor rstd, Tensor inp, Tensor weight, float eps) {
  const char* op = "rmsnorm_forward";
  Device dev = device_of(op, {out, rstd, inp, weight});
  check_rmsnorm(dev, op, out, "out", inp, weight, rstd);
  SIGMA_ROUTE(dev, rmsnorm_forward, out, rstd, inp, weight, eps);
}

void rmsnorm_backward(Tensor d_inp, Tensor d_weight, Tensor d_out, Tensor inp, Tensor weight,
                      Tensor rstd) {
  const char* op = "rmsnorm_backward";
  Device dev = device_of(op, {d_inp, d_weight, d_out, inp, weight, rstd});
  check_rmsnorm(dev, op, d_out, "d_out", inp, weight, rstd);
  check_float(dev, d_inp, op, "d_inp");
  check_numel(d_inp, inp.numel(), op, "d_inp");
  check_dtype(d_weight, DType::kF32, op, "d_weight");
  check_numel(d_weight, weight.numel(), op, "d_weight");
  SIGMA_ROUTE(dev, rmsnorm_backward, d_inp, d_weight, d_out, inp, weight, rstd);
}

namespace {
// x [..., H, d]: one row of H heads per position.
void check_rope(Device dev, const char* op, const Tensor& out, const Tensor& inp,
                const Tensor& positions) {
  check_float(dev, out, op, "out");
  check_float(dev, inp, op, "inp");
  check_dtype(positions, DType::kI32, op, "positions");
  SIGMA_CHECK(inp.shape.rank >= 3 && inp.size(-1) % 2 == 0, "{}: inp is {}", op, inp.shape.str());
  check_numel(out, inp.numel(), op, "out");
  check_numel(positions, inp.numel() / (inp.size(-2) * inp.size(-1)), op, "positions");
}
}  // namespace

void rope_forward(Tensor out, Tensor inp, Tensor positions, float theta) {
  const char* op = "rope_forward";
  Device dev = device_of(op, {out, inp, positions});
  check_rope(dev, op, out, inp, positions);
  SIGMA_ROUTE(dev, rope_forward, out, inp, positions, theta);
}

void rope_backward(Tensor d_inp, Tensor d_out, Tensor positions, float theta) {
  const char* op = "rope_backward";
  Device dev = device_of(op, {d_inp, d_out, positions});
  check_rope(dev, op, d_inp, d_out, positions);
  SIGMA_ROUTE(dev, rope_backward, d_inp, d_out, positions, theta);
}

namespace {
void check_attention(Device dev, const char* op, const Tensor& out, const Tensor& lse,
                     const Tensor& q, const Tensor& k, const Tensor& v) {
  check_float(dev, out, op, "out");
  check_float(dev, q, op, "q");
  check_float(dev, k, op, "k");
  check_float(dev, v, op, "v");
  check_dtype(lse, DType::kF32, op, "lse");
  SIGMA_CHECK(q.shape.rank == 4 && k.shape.rank == 4 && v.shape.rank == 4,
              "{}: q {}, k {}, v {}", op, q.shape.str(), k.shape.str(), v.shape.str());
  int64_t b = q.size(0), t = q.size(1), n_q = q.size(2), n_k = k.size(2), n_v = v.size(2);
  check_shape(k, {b, t, n_k, q.size(3)}, op, "k");
  SIGMA_CHECK(v.size(0) == b && v.size(1) == t, "{}: q {}, v {}", op, q.shape.str(),
              v.shape.str());
  SIGMA_CHECK(n_k > 0 && n_v > 0 && n_q % n_k == 0 && n_q % n_v == 0,
              "{}: n_q {} must be a multiple of n_k {} and n_v {}", op, n_q, n_k, n_v);
  check_shape(out, {b, t, n_q, v.size(3)}, op, "out");
  check_shape(lse, {b, n_q, t}, op, "lse");
}
}  // namespace

void attention_forward(Tensor out, Tensor lse, Tensor q, Tensor k, Tensor v) {
  const char* op = "attention_forward";
  Device dev = device_of(op, {out, lse, q, k, v});
  check_attention(dev, op, out, lse, q, k, v);
  SIGMA_ROUTE(dev, attention_forward, out, lse, q, k, v);
}

void attention_backward(Tensor d_q, Tensor d_k, Tensor d_v, Tensor d_out, Tensor q, Tensor k,
                        Tensor v, Tensor out, Tensor lse) {
  const char* op = "attention_backward";
  Device dev = device_of(op, {d_q, d_k, d_v, d_out, q, k, v, out, lse});
  check_attention(dev, op, out, lse, q, k, v);
  check_float(dev, d_q, op, "d_q");
  check_float(dev, d_k, op, "d_k");
  check_float(dev, d_v, op, "d_v");
  check_float(dev, d_out, op, "d_out");
  check_shape(d_q, q.shape, op, "d_q");
  check_shape(d_k, k.shape, op, "d_k");
  check_shape(d_v, v.shape, op, "d_v");
  check_shape(d_out, out.shape, op, "d_out");
  SIGMA_ROUTE(dev, attention_backward, d_q, d_k, d_v, d_out, q, k, v, out, lse);
}

void swiglu_forward(Tensor out, Tensor gate, Tensor up) {
  const char* op = "swiglu_forward";
  Device dev = device_of(op, {out, gate, up});
  check_float(dev, out, op, "out");
  check_float(dev, gate, op, "gate");
  check_float(dev, up, op, "up");
  check_numel(up, gate.numel(), op, "up");
  check_numel(out, gate.numel(), op, "out");
  SIGMA_ROUTE(dev, swiglu_forward, out, gate, up);
}

void swiglu_backward(Tensor d_gate, Tensor d_up, Tensor d_out, Tensor gate, Tensor up) {
  const char* op = "swiglu_backward";
  Device dev = device_of(op, {d_gate, d_up, d_out, gate, up});
  check_float(dev, d_gate, op, "d_gate");
  check_float(dev, d_up, op, "d_up");
  check_float(dev, d_out, op, "d_out");
  check_float(dev, gate, op, "gate");
  check_float(dev, up, op, "up");
  for (const Tensor* t : {&d_gate, &d_up, &d_out, &up}) check_numel(*t, gate.numel(), op, "tensor");
  SIGMA_ROUTE(dev, swiglu_backward, d_gate, d_up, d_out, gate, up);
}

namespace {
// logits [N, V] (leading dims allowed), targets i32 [N].
void check_cross_entropy(Device dev, const char* op, const Tensor& logits, const Tensor& targets) {
  check_float(dev, logits, op, "logits");
  check_dtype(targets, DType::kI32, op, "targets");
  check_numel(targets, logits.numel() / logits.size(-1), op, "targets");
}
}  // namespace

void cross_entropy_forward(Tensor losses, Tensor logits, Tensor targets) {
  const char* op = "cross_entropy_forward";
  Device dev = device_of(op, {losses, logits, targets});
  check_cross_entropy(dev, op, logits, targets);
  check_dtype(losses, DType::kF32, op, "losses");
  check_numel(losses, targets.numel(), op, "losses");
  SIGMA_ROUTE(dev, cross_entropy_forward, losses, logits, targets);
}

void cross_entropy_backward(Tensor d_logits, Tensor logits, Tensor targets, float loss_scale) {
  const char* op = "cross_entropy_backward";
  Device dev = device_of(op, {d_logits, logits, targets});
  check_cross_entropy(dev, op, logits, targets);
  check_float(dev, d_logits, op, "d_logits");
  check_shape(d_logits, logits.shape, op, "d_logits");
  SIGMA_ROUTE(dev, cross_entropy_backward, d_logits, logits, targets, loss_scale);
}

void add(Tensor out, Tensor a, Tensor b) {
  const char* op = "add";
  Device dev = device_of(op, {out, a, b});
  check_float(dev, out, op, "out");
  check_float(dev, a, op, "a");
  check_float(dev, b, op, "b");
  check_numel(a, out.numel(), op, "a");
  check_numel(b, out.numel(), op, "b");
  SIGMA_ROUTE(dev, add, out, a, b);
}

void scale(Tensor x, float scale) {
  Device dev = device_of("scale", {x});
  check_float(dev, x, "scale", "x");
  SIGMA_ROUTE(dev, scale, x, scale);
}

double sum_squares(Tensor x) {
  Device dev = device_of("sum_squares", {x});
  check_float(dev, x, "sum_squares", "x");
  SIGMA_ROUTE(dev, sum_squares, x);
}

double sum(Tensor x) {
  Device dev = device_of("sum", {x});
  check_float(dev, x, "sum", "x");
  SIGMA_ROUTE(dev, sum, x);
}

void adamw_update(Tensor param, Tensor grad, Tensor m, Tensor v, const AdamWStep& step) {
  const char* op = "adamw_update";
  Device dev = device_of(op, {param, grad, m, v});
  check_dtype(param, DType::kF32, op, "param");
  check_dtype(grad, DType::kF32, op, "grad");
  check_dtype(m, DType::kF32, op, "m");
  check_dtype(v, DType::kF32, op, "v");
  for (const Tensor* t : {&grad, &m, &v}) check_numel(*t, param.numel(), op, "grad/m/v");
  SIGMA_CHECK(step.step >= 1, "{}: step {} (1-based)", op, step.step);
  SIGMA_ROUTE(dev, adamw_update, param, grad, m, v, step);
}

}  // namespace sigma::ops
