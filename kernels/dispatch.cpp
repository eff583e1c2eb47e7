// dispatch.cpp: sigma::ops::* checks shapes and dtypes, then routes on the tensors' device.
//
// The backends (kernels/cpu, kernels/cuda) assume what is checked here: matching shapes, one
// device per call, fp32 on the CPU (fp32 or bf16 activations on CUDA; fp32 wherever ops.h says
// so). A failed check is a bug in the calling code, hence SIGMA_CHECK. Data values (token ids,
// targets) are checked by the backends, which can read them.
#include "kernels/ops.h"

#include "kernels/cpu/cpu_ops.h"
#include "kernels/op_profile.h"
#ifdef SIGMA_CUDA
#include "kernels/cuda/cuda_ops.h"
#endif

#include <initializer_list>
#include <type_traits>
#include <utility>

namespace sigma::ops {
namespace {

struct Named {
  const Tensor& tensor;
  const char* name;
};

// The checks of one op call, with the op's name for their messages.
class Check {
 public:
  // All defined tensors must share one device; undefined (skipped) ones do not count.
  Check(const char* op, std::initializer_list<Tensor> tensors) : op_(op) {
    const Tensor* first = nullptr;
    for (const Tensor& t : tensors) {
      if (!t.defined()) continue;
      if (!first) first = &t;
      SIGMA_CHECK(t.device == first->device, "{}: tensors on {} and {}", op_,
                  device_name(first->device), device_name(t.device));
    }
    SIGMA_CHECK(first != nullptr, "{}: every tensor is undefined", op_);
    device_ = first->device;
  }

  Device device() const { return device_; }

  // Activations: fp32 on the CPU; the CUDA backend may also store them in bf16.
  void activations(std::initializer_list<Named> list) const {
    for (const Named& a : list) {
      DType d = a.tensor.dtype;
      SIGMA_CHECK(d == DType::kF32 || (device_ == Device::kCuda && d == DType::kBF16),
                  "{}: {} is {} on {}", op_, a.name, dtype_name(d), device_name(device_));
    }
  }

  void dtype(std::initializer_list<Named> list, DType dtype) const {
    for (const Named& a : list)
      SIGMA_CHECK(a.tensor.dtype == dtype, "{}: {} is {}, needs {}", op_, a.name,
                  dtype_name(a.tensor.dtype), dtype_name(dtype));
  }

  void numel(std::initializer_list<Named> list, int64_t numel) const {
    for (const Named& a : list)
      SIGMA_CHECK(a.tensor.numel() == numel, "{}: {} {} has {} elements, needs {}", op_, a.name,
                  a.tensor.shape.str(), a.tensor.numel(), numel);
  }

  void shape(const Named& a, const Shape& shape) const {
    SIGMA_CHECK(a.tensor.shape == shape, "{}: {} is {}, needs {}", op_, a.name,
                a.tensor.shape.str(), shape.str());
  }

  void rank(const Named& a, int rank) const {
    SIGMA_CHECK(a.tensor.shape.rank == rank, "{}: {} is {}, needs rank {}", op_, a.name,
                a.tensor.shape.str(), rank);
  }

  // out [N, O] = inp [N, I] @ weight [O, I]^T; inp and out may carry extra leading dims.
  void matmul(const Named& out, const Tensor& inp, const Tensor& weight) const {
    activations({out, {inp, "inp"}, {weight, "weight"}});
    rank({weight, "weight"}, 2);
    SIGMA_CHECK(inp.size(-1) == weight.size(1) && out.tensor.size(-1) == weight.size(0),
                "{}: inp {}, weight {}, {} {}", op_, inp.shape.str(), weight.shape.str(), out.name,
                out.tensor.shape.str());
    numel({out}, inp.numel() / weight.size(1) * weight.size(0));
  }

  // x [..., C] normalized over C with weight [C] and one rstd per row.
  void rmsnorm(const Named& x, const Tensor& inp, const Tensor& weight, const Tensor& rstd) const {
    activations({x, {inp, "inp"}, {weight, "weight"}});
    dtype({{rstd, "rstd"}}, DType::kF32);
    numel({x}, inp.numel());
    numel({{weight, "weight"}}, inp.size(-1));
    numel({{rstd, "rstd"}}, inp.numel() / inp.size(-1));
  }

  // x [..., H, d] with one position per row of H heads.
  void rope(const Tensor& out, const Tensor& inp, const Tensor& positions) const {
    activations({{out, "out"}, {inp, "inp"}});
    dtype({{positions, "positions"}}, DType::kI32);
    SIGMA_CHECK(inp.shape.rank >= 3 && inp.size(-1) % 2 == 0, "{}: inp is {}, needs [..., H, even d]",
                op_, inp.shape.str());
    numel({{out, "out"}}, inp.numel());
    numel({{positions, "positions"}}, inp.numel() / (inp.size(-2) * inp.size(-1)));
  }

  void attention(const Tensor& out, const Tensor& lse, const Tensor& q, const Tensor& k,
                 const Tensor& v) const {
    activations({{out, "out"}, {q, "q"}, {k, "k"}, {v, "v"}});
    dtype({{lse, "lse"}}, DType::kF32);
    rank({q, "q"}, 4);
    rank({k, "k"}, 4);
    rank({v, "v"}, 4);
    int64_t b = q.size(0), t = q.size(1), n_q = q.size(2), n_k = k.size(2), n_v = v.size(2);
    shape({k, "k"}, {b, t, n_k, q.size(3)});
    shape({v, "v"}, {b, t, n_v, v.size(3)});
    SIGMA_CHECK(n_k > 0 && n_v > 0 && n_q % n_k == 0 && n_q % n_v == 0,
                "{}: n_q {} must be a multiple of n_k {} and of n_v {}", op_, n_q, n_k, n_v);
    shape({out, "out"}, {b, t, n_q, v.size(3)});
    shape({lse, "lse"}, {b, n_q, t});
  }

  // logits [N, V] (leading dims allowed), targets i32 [N].
  void cross_entropy(const Tensor& logits, const Tensor& targets) const {
    activations({{logits, "logits"}});
    dtype({{targets, "targets"}}, DType::kI32);
    numel({{targets, "targets"}}, logits.numel() / logits.size(-1));
  }

 private:
  const char* op_;
  Device device_ = Device::kCpu;
};

}  // namespace

// The first two defined tensors among an op's arguments: they name its shape in the profile.
template <class... Args>
std::pair<Tensor, Tensor> shape_tensors(const Args&... args) {
  std::pair<Tensor, Tensor> picked;
  int found = 0;
  auto consider = [&](const auto& arg) {
    if constexpr (std::is_same_v<std::decay_t<decltype(arg)>, Tensor>) {
      if (arg.defined() && found < 2) (found++ == 0 ? picked.first : picked.second) = arg;
    }
  };
  (consider(args), ...);
  return picked;
}

// Ends an op: `return cpu::op(...)` on the CPU, the CUDA twin (or a clear error) otherwise,
// timed while the op profile records (kernels/op_profile.h).
#ifdef SIGMA_CUDA
#define SIGMA_BACKEND_CALL(device, op, ...)                         \
  if ((device) == Device::kCpu) return cpu::op(__VA_ARGS__);        \
  return cuda::op(__VA_ARGS__)
#else
#define SIGMA_BACKEND_CALL(device, op, ...)                         \
  if ((device) == Device::kCpu) return cpu::op(__VA_ARGS__);        \
  fail("{} needs the CUDA backend; this build has none", #op)
#endif
#define SIGMA_ROUTE(device, op, ...)                                                        \
  do {                                                                                      \
    const auto profiled_ = op_profile::recording() ? shape_tensors(__VA_ARGS__)             \
                                                   : std::pair<Tensor, Tensor>{};           \
    op_profile::Scope profile_scope_(#op, profiled_.first, profiled_.second);               \
    SIGMA_BACKEND_CALL(device, op, __VA_ARGS__);                                            \
  } while (0)

void embedding_forward(Tensor out, Tensor tokens, Tensor weight) {
  Check c("embedding_forward", {out, tokens, weight});
  c.activations({{out, "out"}, {weight, "weight"}});
  c.dtype({{tokens, "tokens"}}, DType::kI32);
  c.rank({weight, "weight"}, 2);
  c.numel({{out, "out"}}, tokens.numel() * weight.size(1));
  SIGMA_ROUTE(c.device(), embedding_forward, out, tokens, weight);
}

void embedding_backward(Tensor d_weight, Tensor d_out, Tensor tokens) {
  Check c("embedding_backward", {d_weight, d_out, tokens});
  c.activations({{d_out, "d_out"}});
  c.dtype({{d_weight, "d_weight"}}, DType::kF32);
  c.dtype({{tokens, "tokens"}}, DType::kI32);
  c.rank({d_weight, "d_weight"}, 2);
  c.numel({{d_out, "d_out"}}, tokens.numel() * d_weight.size(1));
  SIGMA_ROUTE(c.device(), embedding_backward, d_weight, d_out, tokens);
}

void matmul_forward(Tensor out, Tensor inp, Tensor weight) {
  Check c("matmul_forward", {out, inp, weight});
  c.matmul({out, "out"}, inp, weight);
  SIGMA_ROUTE(c.device(), matmul_forward, out, inp, weight);
}

void matmul_backward(Tensor d_inp, Tensor d_weight, Tensor d_out, Tensor inp, Tensor weight,
                     GradWrite write, GradWrite input_write) {
  Check c("matmul_backward", {d_inp, d_weight, d_out, inp, weight});
  c.matmul({d_out, "d_out"}, inp, weight);
  c.dtype({{d_weight, "d_weight"}}, DType::kF32);
  c.shape({d_weight, "d_weight"}, weight.shape);
  if (d_inp.defined()) {
    c.activations({{d_inp, "d_inp"}});
    c.numel({{d_inp, "d_inp"}}, inp.numel());
  }
  SIGMA_ROUTE(c.device(), matmul_backward, d_inp, d_weight, d_out, inp, weight, write,
              input_write);
}

void rmsnorm_forward(Tensor out, Tensor rstd, Tensor inp, Tensor weight, float eps) {
  Check c("rmsnorm_forward", {out, rstd, inp, weight});
  c.rmsnorm({out, "out"}, inp, weight, rstd);
  SIGMA_ROUTE(c.device(), rmsnorm_forward, out, rstd, inp, weight, eps);
}

void add_rmsnorm_forward(Tensor sum, Tensor out, Tensor rstd, Tensor a, Tensor b, Tensor weight,
                         float eps) {
  Check c("add_rmsnorm_forward", {sum, out, rstd, a, b, weight});
  c.rmsnorm({out, "out"}, sum, weight, rstd);
  c.activations({{a, "a"}, {b, "b"}});
  c.dtype({{a, "a"}, {b, "b"}}, sum.dtype);
  c.numel({{a, "a"}, {b, "b"}}, sum.numel());
  SIGMA_ROUTE(c.device(), add_rmsnorm_forward, sum, out, rstd, a, b, weight, eps);
}

void rmsnorm_backward(Tensor d_inp, Tensor d_weight, Tensor d_out, Tensor inp, Tensor weight,
                      Tensor rstd, GradWrite d_inp_write) {
  Check c("rmsnorm_backward", {d_inp, d_weight, d_out, inp, weight, rstd});
  c.rmsnorm({d_out, "d_out"}, inp, weight, rstd);
  c.activations({{d_inp, "d_inp"}});
  c.dtype({{d_weight, "d_weight"}}, DType::kF32);
  c.numel({{d_inp, "d_inp"}}, inp.numel());
  c.numel({{d_weight, "d_weight"}}, weight.numel());
  SIGMA_CHECK(d_inp_write == GradWrite::kOverwrite || d_inp.data != d_out.data,
              "rmsnorm_backward: d_inp accumulates, so it cannot alias d_out");
  SIGMA_ROUTE(c.device(), rmsnorm_backward, d_inp, d_weight, d_out, inp, weight, rstd,
              d_inp_write);
}

void rope_forward(Tensor out, Tensor inp, Tensor positions, float theta) {
  Check c("rope_forward", {out, inp, positions});
  c.rope(out, inp, positions);
  SIGMA_ROUTE(c.device(), rope_forward, out, inp, positions, theta);
}

void rope_backward(Tensor d_inp, Tensor d_out, Tensor positions, float theta) {
  Check c("rope_backward", {d_inp, d_out, positions});
  c.rope(d_inp, d_out, positions);
  SIGMA_ROUTE(c.device(), rope_backward, d_inp, d_out, positions, theta);
}

void attention_forward(Tensor out, Tensor lse, Tensor q, Tensor k, Tensor v) {
  Check c("attention_forward", {out, lse, q, k, v});
  c.attention(out, lse, q, k, v);
  SIGMA_ROUTE(c.device(), attention_forward, out, lse, q, k, v);
}

void attention_backward(Tensor d_q, Tensor d_k, Tensor d_v, Tensor d_out, Tensor q, Tensor k,
                        Tensor v, Tensor out, Tensor lse) {
  Check c("attention_backward", {d_q, d_k, d_v, d_out, q, k, v, out, lse});
  c.attention(out, lse, q, k, v);
  c.activations({{d_q, "d_q"}, {d_k, "d_k"}, {d_v, "d_v"}, {d_out, "d_out"}});
  c.shape({d_q, "d_q"}, q.shape);
  c.shape({d_k, "d_k"}, k.shape);
  c.shape({d_v, "d_v"}, v.shape);
  c.shape({d_out, "d_out"}, out.shape);
  SIGMA_ROUTE(c.device(), attention_backward, d_q, d_k, d_v, d_out, q, k, v, out, lse);
}

void attention_cached_forward(Tensor out, Tensor q, Tensor k, Tensor v) {
  Check c("attention_cached_forward", {out, q, k, v});
  c.activations({{out, "out"}, {q, "q"}, {k, "k"}, {v, "v"}});
  c.rank({q, "q"}, 4);
  c.rank({k, "k"}, 4);
  c.rank({v, "v"}, 4);
  int64_t b = q.size(0), t_q = q.size(1), t_k = k.size(1), n_q = q.size(2);
  int64_t n_k = k.size(2), n_v = v.size(2);
  SIGMA_CHECK(t_k >= t_q, "attention_cached_forward: {} keys for {} queries", t_k, t_q);
  c.shape({k, "k"}, {b, t_k, n_k, q.size(3)});
  c.shape({v, "v"}, {b, t_k, n_v, v.size(3)});
  SIGMA_CHECK(n_k > 0 && n_v > 0 && n_q % n_k == 0 && n_q % n_v == 0,
              "attention_cached_forward: n_q {} must be a multiple of n_k {} and of n_v {}", n_q,
              n_k, n_v);
  c.shape({out, "out"}, {b, t_q, n_q, v.size(3)});
  SIGMA_ROUTE(c.device(), attention_cached_forward, out, q, k, v);
}

void swiglu_forward(Tensor out, Tensor gate, Tensor up) {
  Check c("swiglu_forward", {out, gate, up});
  c.activations({{out, "out"}, {gate, "gate"}, {up, "up"}});
  c.numel({{out, "out"}, {up, "up"}}, gate.numel());
  SIGMA_ROUTE(c.device(), swiglu_forward, out, gate, up);
}

void swiglu_backward(Tensor d_gate, Tensor d_up, Tensor d_out, Tensor gate, Tensor up) {
  Check c("swiglu_backward", {d_gate, d_up, d_out, gate, up});
  std::initializer_list<Named> all = {
      {d_gate, "d_gate"}, {d_up, "d_up"}, {d_out, "d_out"}, {gate, "gate"}, {up, "up"}};
  c.activations(all);
  c.numel(all, gate.numel());
  SIGMA_ROUTE(c.device(), swiglu_backward, d_gate, d_up, d_out, gate, up);
}

void cross_entropy_forward(Tensor losses, Tensor lse, Tensor logits, Tensor targets) {
  Check c("cross_entropy_forward", {losses, lse, logits, targets});
  c.cross_entropy(logits, targets);
  c.dtype({{losses, "losses"}}, DType::kF32);
  c.numel({{losses, "losses"}}, targets.numel());
  if (lse.defined()) {
    c.dtype({{lse, "lse"}}, DType::kF32);
    c.numel({{lse, "lse"}}, targets.numel());
  }
  SIGMA_ROUTE(c.device(), cross_entropy_forward, losses, lse, logits, targets);
}

void cross_entropy_backward(Tensor d_logits, Tensor logits, Tensor lse, Tensor targets,
                            float loss_scale) {
  Check c("cross_entropy_backward", {d_logits, logits, lse, targets});
  c.cross_entropy(logits, targets);
  c.activations({{d_logits, "d_logits"}});
  c.shape({d_logits, "d_logits"}, logits.shape);
  c.dtype({{lse, "lse"}}, DType::kF32);
  c.numel({{lse, "lse"}}, targets.numel());
  SIGMA_ROUTE(c.device(), cross_entropy_backward, d_logits, logits, lse, targets, loss_scale);
}

void add(Tensor out, Tensor a, Tensor b) {
  Check c("add", {out, a, b});
  c.activations({{out, "out"}, {a, "a"}, {b, "b"}});
  c.numel({{a, "a"}, {b, "b"}}, out.numel());
  SIGMA_ROUTE(c.device(), add, out, a, b);
}

void convert(Tensor out, Tensor inp) {
  Check c("convert", {out, inp});
  c.activations({{out, "out"}, {inp, "inp"}});
  c.numel({{out, "out"}}, inp.numel());
  SIGMA_ROUTE(c.device(), convert, out, inp);
}

void scale(Tensor x, float scale) {
  Check c("scale", {x});
  c.activations({{x, "x"}});
  SIGMA_ROUTE(c.device(), scale, x, scale);
}

double sum_squares(Tensor x) {
  Check c("sum_squares", {x});
  c.activations({{x, "x"}});
  SIGMA_ROUTE(c.device(), sum_squares, x);
}

double sum(Tensor x) {
  Check c("sum", {x});
  c.activations({{x, "x"}});
  SIGMA_ROUTE(c.device(), sum, x);
}

void adamw_update(Tensor param, Tensor grad, Tensor m, Tensor v, const AdamWStep& step,
                  Tensor weight) {
  Check c("adamw_update", {param, grad, m, v, weight});
  std::initializer_list<Named> all = {{param, "param"}, {grad, "grad"}, {m, "m"}, {v, "v"}};
  c.dtype(all, DType::kF32);
  c.numel(all, param.numel());
  if (weight.defined()) {
    c.activations({{weight, "weight"}});
    c.numel({{weight, "weight"}}, param.numel());
  }
  SIGMA_CHECK(step.step >= 1, "adamw_update: step {} (steps count from 1)", step.step);
  SIGMA_ROUTE(c.device(), adamw_update, param, grad, m, v, step, weight);
}

// --- MoE router and dispatch: router tensors are fp32 on every device (DESIGN.md) ---------------

namespace {

// probs f32 [N, K] and experts i32 [N, K] chosen from scores f32 [N, E] (+ bias f32 [E]).
void check_topk(const Check& c, const Tensor& probs, const Tensor& experts, const Tensor& scores,
                const Tensor& bias) {
  c.dtype({{probs, "probs"}, {scores, "scores"}}, DType::kF32);
  c.dtype({{experts, "experts"}}, DType::kI32);
  c.rank({scores, "scores"}, 2);
  int64_t n = scores.size(0), e = scores.size(1), k = probs.size(-1);
  SIGMA_CHECK(k >= 1 && k <= e, "router top-k: {} of {} experts", k, e);
  c.shape({probs, "probs"}, {n, k});
  c.shape({experts, "experts"}, {n, k});
  if (bias.defined()) {
    c.dtype({{bias, "bias"}}, DType::kF32);
    c.numel({{bias, "bias"}}, e);
  }
}

}  // namespace

void router_scores_forward(Tensor scores, Tensor logits, ScoreFunction fn) {
  Check c("router_scores_forward", {scores, logits});
  c.dtype({{scores, "scores"}, {logits, "logits"}}, DType::kF32);
  c.shape({scores, "scores"}, logits.shape);
  SIGMA_ROUTE(c.device(), router_scores_forward, scores, logits, fn);
}

void router_scores_backward(Tensor d_logits, Tensor d_scores, Tensor scores, ScoreFunction fn) {
  Check c("router_scores_backward", {d_logits, d_scores, scores});
  c.dtype({{d_logits, "d_logits"}, {d_scores, "d_scores"}, {scores, "scores"}}, DType::kF32);
  c.shape({d_logits, "d_logits"}, scores.shape);
  c.shape({d_scores, "d_scores"}, scores.shape);
  SIGMA_ROUTE(c.device(), router_scores_backward, d_logits, d_scores, scores, fn);
}

void router_topk_forward(Tensor probs, Tensor experts, Tensor scores, Tensor bias,
                         bool renormalize) {
  Check c("router_topk_forward", {probs, experts, scores, bias});
  check_topk(c, probs, experts, scores, bias);
  SIGMA_ROUTE(c.device(), router_topk_forward, probs, experts, scores, bias, renormalize);
}

void router_scores_topk_forward(Tensor scores, Tensor probs, Tensor experts, Tensor logits,
                                Tensor bias, ScoreFunction fn, bool renormalize) {
  Check c("router_scores_topk_forward", {scores, probs, experts, logits, bias});
  c.dtype({{logits, "logits"}}, DType::kF32);
  c.shape({scores, "scores"}, logits.shape);
  check_topk(c, probs, experts, scores, bias);
  SIGMA_ROUTE(c.device(), router_scores_topk_forward, scores, probs, experts, logits, bias, fn,
              renormalize);
}

void router_topk_backward(Tensor d_scores, Tensor d_probs, Tensor probs, Tensor experts,
                          Tensor scores, bool renormalize) {
  Check c("router_topk_backward", {d_scores, d_probs, probs, experts, scores});
  c.dtype({{d_scores, "d_scores"}, {d_probs, "d_probs"}, {probs, "probs"}, {scores, "scores"}},
          DType::kF32);
  c.dtype({{experts, "experts"}}, DType::kI32);
  c.rank({scores, "scores"}, 2);
  c.shape({d_scores, "d_scores"}, scores.shape);
  c.shape({d_probs, "d_probs"}, probs.shape);
  c.shape({experts, "experts"}, {scores.size(0), probs.size(-1)});
  SIGMA_ROUTE(c.device(), router_topk_backward, d_scores, d_probs, probs, experts, scores,
              renormalize);
}

void router_balance_forward(Tensor losses, Tensor coeffs, Tensor logits, Tensor scores,
                            Tensor counts, const RouterBalanceConfig& config) {
  Check c("router_balance_forward", {losses, coeffs, logits, scores, counts});
  c.dtype({{losses, "losses"}, {coeffs, "coeffs"}, {logits, "logits"}, {scores, "scores"}},
          DType::kF32);
  c.dtype({{counts, "counts"}}, DType::kI32);
  c.rank({scores, "scores"}, 2);
  c.shape({logits, "logits"}, scores.shape);
  int64_t e = scores.size(1);
  c.numel({{losses, "losses"}}, kRouterLosses);
  c.numel({{coeffs, "coeffs"}}, 2 * e + 2);
  c.numel({{counts, "counts"}}, e);
  SIGMA_CHECK(config.top1_lbl_temperature > 0, "router_balance_forward: temperature {}",
              config.top1_lbl_temperature);
  SIGMA_ROUTE(c.device(), router_balance_forward, losses, coeffs, logits, scores, counts, config);
}

void router_balance_backward_scores(Tensor d_scores, Tensor scores, Tensor coeffs,
                                    float aux_scale) {
  Check c("router_balance_backward_scores", {d_scores, scores, coeffs});
  c.dtype({{d_scores, "d_scores"}, {scores, "scores"}, {coeffs, "coeffs"}}, DType::kF32);
  c.rank({scores, "scores"}, 2);
  c.shape({d_scores, "d_scores"}, scores.shape);
  c.numel({{coeffs, "coeffs"}}, 2 * scores.size(1) + 2);
  SIGMA_ROUTE(c.device(), router_balance_backward_scores, d_scores, scores, coeffs, aux_scale);
}

void router_balance_backward_logits(Tensor d_logits, Tensor logits, Tensor coeffs,
                                    const RouterBalanceConfig& config, float aux_scale) {
  Check c("router_balance_backward_logits", {d_logits, logits, coeffs});
  c.dtype({{d_logits, "d_logits"}, {logits, "logits"}, {coeffs, "coeffs"}}, DType::kF32);
  c.rank({logits, "logits"}, 2);
  c.shape({d_logits, "d_logits"}, logits.shape);
  c.numel({{coeffs, "coeffs"}}, 2 * logits.size(1) + 2);
  SIGMA_CHECK(config.top1_lbl_temperature > 0, "router_balance_backward_logits: temperature {}",
              config.top1_lbl_temperature);
  SIGMA_ROUTE(c.device(), router_balance_backward_logits, d_logits, logits, coeffs, config,
              aux_scale);
}

void router_bias_update(Tensor bias, Tensor counts, float rate) {
  Check c("router_bias_update", {bias, counts});
  c.dtype({{bias, "bias"}}, DType::kF32);
  c.dtype({{counts, "counts"}}, DType::kI32);
  c.numel({{counts, "counts"}}, bias.numel());
  SIGMA_ROUTE(c.device(), router_bias_update, bias, counts, rate);
}

void moe_routing_map(Tensor row_of, Tensor tokens_per_expert, Tensor experts) {
  Check c("moe_routing_map", {row_of, tokens_per_expert, experts});
  c.dtype({{row_of, "row_of"}, {tokens_per_expert, "tokens_per_expert"}, {experts, "experts"}},
          DType::kI32);
  c.shape({row_of, "row_of"}, experts.shape);
  SIGMA_ROUTE(c.device(), moe_routing_map, row_of, tokens_per_expert, experts);
}

void moe_counts_accumulate(Tensor total, Tensor counts) {
  Check c("moe_counts_accumulate", {total, counts});
  c.dtype({{total, "total"}, {counts, "counts"}}, DType::kI32);
  c.numel({{counts, "counts"}}, total.numel());
  SIGMA_ROUTE(c.device(), moe_counts_accumulate, total, counts);
}

void moe_permute_forward(Tensor out, Tensor inp, Tensor row_of) {
  Check c("moe_permute_forward", {out, inp, row_of});
  c.activations({{out, "out"}, {inp, "inp"}});
  c.dtype({{row_of, "row_of"}}, DType::kI32);
  c.rank({row_of, "row_of"}, 2);
  c.shape({inp, "inp"}, {row_of.size(0), inp.size(-1)});
  c.shape({out, "out"}, {row_of.numel(), inp.size(-1)});
  SIGMA_ROUTE(c.device(), moe_permute_forward, out, inp, row_of);
}

void moe_permute_backward(Tensor d_inp, Tensor d_out, Tensor row_of) {
  Check c("moe_permute_backward", {d_inp, d_out, row_of});
  c.activations({{d_inp, "d_inp"}, {d_out, "d_out"}});
  c.dtype({{row_of, "row_of"}}, DType::kI32);
  c.rank({row_of, "row_of"}, 2);
  c.shape({d_inp, "d_inp"}, {row_of.size(0), d_inp.size(-1)});
  c.shape({d_out, "d_out"}, {row_of.numel(), d_inp.size(-1)});
  SIGMA_ROUTE(c.device(), moe_permute_backward, d_inp, d_out, row_of);
}

void moe_unpermute_forward(Tensor out, Tensor inp, Tensor row_of, Tensor probs) {
  Check c("moe_unpermute_forward", {out, inp, row_of, probs});
  c.activations({{out, "out"}, {inp, "inp"}});
  c.dtype({{row_of, "row_of"}}, DType::kI32);
  c.dtype({{probs, "probs"}}, DType::kF32);
  c.rank({row_of, "row_of"}, 2);
  c.shape({probs, "probs"}, row_of.shape);
  c.shape({out, "out"}, {row_of.size(0), out.size(-1)});
  c.shape({inp, "inp"}, {row_of.numel(), out.size(-1)});
  SIGMA_ROUTE(c.device(), moe_unpermute_forward, out, inp, row_of, probs);
}

void moe_unpermute_backward(Tensor d_inp, Tensor d_probs, Tensor d_out, Tensor inp, Tensor row_of,
                            Tensor probs) {
  Check c("moe_unpermute_backward", {d_inp, d_probs, d_out, inp, row_of, probs});
  c.activations({{d_inp, "d_inp"}, {d_out, "d_out"}, {inp, "inp"}});
  c.dtype({{row_of, "row_of"}}, DType::kI32);
  c.dtype({{probs, "probs"}, {d_probs, "d_probs"}}, DType::kF32);
  c.rank({row_of, "row_of"}, 2);
  c.shape({probs, "probs"}, row_of.shape);
  c.shape({d_probs, "d_probs"}, row_of.shape);
  c.shape({d_out, "d_out"}, {row_of.size(0), d_out.size(-1)});
  c.shape({inp, "inp"}, {row_of.numel(), d_out.size(-1)});
  c.shape({d_inp, "d_inp"}, inp.shape);
  SIGMA_ROUTE(c.device(), moe_unpermute_backward, d_inp, d_probs, d_out, inp, row_of, probs);
}

// --- grouped matmul over experts ------------------------------------------------------------------

namespace {

// inp [R, I], weight [E, O, I], out (or d_out) [R, O], tokens_per_expert i32 [E]. On CUDA the
// operands are bf16 (the kernel feeds them to the tensor cores as they are).
void check_grouped_matmul(const Check& c, const Named& out, const Tensor& inp, const Tensor& weight,
                          const Tensor& tokens_per_expert) {
  c.activations({out, {inp, "inp"}, {weight, "weight"}});
  if (c.device() == Device::kCuda) c.dtype({out, {inp, "inp"}, {weight, "weight"}}, DType::kBF16);
  c.dtype({{tokens_per_expert, "tokens_per_expert"}}, DType::kI32);
  c.rank({weight, "weight"}, 3);
  c.shape({inp, "inp"}, {inp.size(0), weight.size(2)});
  c.shape(out, {inp.size(0), weight.size(1)});
  c.shape({tokens_per_expert, "tokens_per_expert"}, {weight.size(0)});
}

}  // namespace

void grouped_matmul_forward(Tensor out, Tensor inp, Tensor weight, Tensor tokens_per_expert) {
  Check c("grouped_matmul_forward", {out, inp, weight, tokens_per_expert});
  check_grouped_matmul(c, {out, "out"}, inp, weight, tokens_per_expert);
  SIGMA_ROUTE(c.device(), grouped_matmul_forward, out, inp, weight, tokens_per_expert);
}

void grouped_matmul_backward(Tensor d_inp, Tensor d_weight, Tensor d_out, Tensor inp,
                             Tensor weight, Tensor tokens_per_expert, GradWrite write) {
  Check c("grouped_matmul_backward", {d_inp, d_weight, d_out, inp, weight, tokens_per_expert});
  check_grouped_matmul(c, {d_out, "d_out"}, inp, weight, tokens_per_expert);
  c.dtype({{d_weight, "d_weight"}}, DType::kF32);
  c.shape({d_weight, "d_weight"}, weight.shape);
  if (d_inp.defined()) {
    c.activations({{d_inp, "d_inp"}});
    if (c.device() == Device::kCuda) c.dtype({{d_inp, "d_inp"}}, DType::kBF16);
    c.shape({d_inp, "d_inp"}, inp.shape);
  }
  SIGMA_ROUTE(c.device(), grouped_matmul_backward, d_inp, d_weight, d_out, inp, weight,
              tokens_per_expert, write);
}

}  // namespace sigma::ops
