// Whole-model parity: one forward and backward of a tiny model on the CPU (fp32) and on
// CUDA (bf16 activations and weights, fp32 gradients) from the same initial weights and
// tokens; the loss and every parameter gradient must agree to bf16 accuracy.
//
// Bounds: the loss is a mean of fp32 cross-entropies of bf16 logits (~1e-3 relative); each
// gradient passes through every layer's bf16 roundings on the way back, ~1e-2 relative in
// norm for two layers (METHOD.md's bf16 range), so 3e-2 per tensor.
//
// MoE routing is a step function of the router logits: a token whose K-th and (K+1)-th logits
// are nearly tied can pick another expert under bf16 than under fp32, and that expert's
// gradients then differ at O(1), which no tolerance tells from a wrong gradient. So the MoE
// model routes by a code that no rounding can reorder (with_routing_code), a CPU test checks
// that every token takes its code's experts, and the parity test requires the CUDA routing
// maps to equal the CPU's before it compares gradients.
#include "cuda_parity.h"
#include "tiny_model.h"

#include <doctest/doctest.h>

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace sigma {
namespace {

constexpr int64_t kBatch = 2, kSeqLen = 96;

// Head dims of 64, the kernels' native tile width (smaller ones are zero-padded to it).
ModelConfig cuda_dense_config() {
  ModelConfig c;
  c.n_layers = 2;
  c.d_model = 128;
  c.d_ff = 256;
  c.vocab_size = 300;
  c.init_std = 0.05;
  c.attention = {4, 1, 2, 64, 64, 96, true};
  return c;
}

ModelConfig cuda_moe_config() {
  ModelConfig c = cuda_dense_config();
  c.attention = {4, 2, 2, 64, 64, 0, true};
  c.moe.n_experts = 8;
  c.moe.d_expert = 64;
  c.moe.n_shared_experts = 1;
  c.moe.d_shared_expert = 64;
  c.moe.dense_layers = 1;
  c.moe.top_k = {2};
  c.moe.lbl_coeff = 0.01;
  c.moe.z_loss_coeff = 0.001;
  return c;
}

// Rewrites parameter `name` on the host through edit(values, shape); the compute weights follow.
void edit_param(test::TinyModel& m, const std::string& name,
                const std::function<void(float*, const Shape&)>& edit) {
  for (const ParamInfo& p : m.params.list()) {
    if (p.name != name) continue;
    Buffer host(p.param.value.bytes(), Device::kCpu);
    Tensor h = host.tensor(0, p.shape, DType::kF32);
    device::copy(h, p.param.value);
    edit(h.f32(), p.shape);
    device::copy(p.param.value, h);
    m.params.refresh_weights();
    return;
  }
  FAIL("no parameter " << name);
}

// The two experts token v is coded for: v mod E first, and a second one such that every
// ordered pair occurs over the vocabulary.
std::pair<int32_t, int32_t> coded_experts(int64_t v, int64_t e) {
  int64_t first = v % e, second = (first + 1 + (v / e) % (e - 1)) % e;
  return {int32_t(first), int32_t(second)};
}

// The first E residual coordinates carry only a routing code: token v's embedding holds 2a
// at its first expert's coordinate, a at its second's and 0 at the others, and no branch
// below the router writes there (those rows of o_proj and down_proj are zeroed). Each gate
// row e is s times the unit vector on coordinate e, so a token's logits are s * rstd * (2a,
// a, 0, ...) in its experts' places (the norm weights are 1 at init). The code values and s
// are exact in bf16, every op on the way (adding zeros, the norm's common positive scale,
// rounding, the one-term gate products) preserves their order on both devices, so the top-2
// is the code's by construction: no tolerance decides it. With a = 0.25 the code entries are
// of the size of the residual's other entries (~0.16), and s = 0.5 puts the logits near
// (1.5, 0.75, 0) (router entropy 1.9 nats of ln 8 = 2.08), far from a saturated softmax, so
// the router's gradient stays a real part of the comparison. The gate and the zeroed rows
// still get full gradients, compared like the others.
void with_routing_code(test::TinyModel& m) {
  const ModelConfig& c = m.model.config();
  const int64_t e = c.moe.n_experts, d = c.d_model, first_moe = c.moe.dense_layers;
  const float a = 0.25f, s = 0.5f;
  REQUIRE(c.n_layers == first_moe + 1);  // a later router would read the MoE layer's output there
  edit_param(m, "model.embed_tokens.weight", [&](float* w, const Shape& shape) {
    for (int64_t v = 0; v < shape[0]; ++v) {
      auto [first, second] = coded_experts(v, e);
      std::fill(w + v * d, w + v * d + e, 0.0f);
      w[v * d + first] = 2 * a;
      w[v * d + second] = a;
    }
  });
  auto zero_rows = [&](float* w, const Shape& shape) { std::fill(w, w + e * shape[1], 0.0f); };
  for (int64_t l = 0; l <= first_moe; ++l) {
    edit_param(m, fmt::format("model.layers.{}.self_attn.o_proj.weight", l), zero_rows);
    if (l < first_moe) edit_param(m, fmt::format("model.layers.{}.mlp.down_proj.weight", l), zero_rows);
  }
  edit_param(m, fmt::format("model.layers.{}.mlp.gate.weight", first_moe),
             [&](float* w, const Shape& shape) {
               std::fill(w, w + shape.numel(), 0.0f);
               for (int64_t i = 0; i < e; ++i) w[i * d + i] = s;
             });
}

// The MoE layers' routing maps (experts_NK), concatenated.
std::vector<int32_t> routing_maps(test::TinyModel& m) {
  std::vector<int32_t> all;
  for (int64_t l = 0; l < m.model.config().n_layers; ++l)
    if (MoeLayer* moe = m.model.moe_layer(l)) {
      std::vector<int32_t> map = test::to_host_i32(moe->experts_NK());
      all.insert(all.end(), map.begin(), map.end());
    }
  return all;
}

void check_one_step_parity(const ModelConfig& config) {
  test::TinyModel cpu(config, kBatch, kSeqLen, Device::kCpu);
  test::TinyModel gpu(config, kBatch, kSeqLen, Device::kCuda);
  if (config.moe.enabled()) {
    with_routing_code(cpu);
    with_routing_code(gpu);
  }
  float scale = float(1.0 / double(kBatch * kSeqLen));
  cpu.params.zero_grads();
  gpu.params.zero_grads();
  double cpu_loss = cpu.loss(), gpu_loss = gpu.loss();
  cpu.model.backward(scale);
  gpu.model.backward(scale);
  MESSAGE(fmt::format("loss cpu {:.6f} cuda {:.6f}", cpu_loss, gpu_loss));
  CHECK(std::abs(gpu_loss - cpu_loss) / cpu_loss < 2e-3);
  if (config.moe.enabled()) {
    // With the same routing, an MoE gradient is a sum over the same tokens on both sides and
    // takes the dense bound; a token routed differently would make it incomparable.
    std::vector<int32_t> cpu_map = routing_maps(cpu), gpu_map = routing_maps(gpu);
    REQUIRE(cpu_map.size() == gpu_map.size());
    int64_t differ = 0;
    for (size_t i = 0; i < cpu_map.size(); ++i) differ += cpu_map[i] != gpu_map[i];
    MESSAGE(fmt::format("routing: {} of {} (token, slot) choices differ", differ, cpu_map.size()));
    REQUIRE(differ == 0);
  }
  std::vector<float> cpu_grads = cpu.grads(), gpu_grads = gpu.grads();
  size_t offset = 0;
  double worst = 0;
  for (const ParamInfo& p : cpu.params.list()) {
    size_t n = size_t(p.shape.numel());
    std::vector<float> a(cpu_grads.begin() + offset, cpu_grads.begin() + offset + n);
    std::vector<float> b(gpu_grads.begin() + offset, gpu_grads.begin() + offset + n);
    double err = test::rel_error(b, a);
    worst = std::max(worst, err);
    CHECK_MESSAGE(err < 3e-2, p.name << " gradient rel error " << err);
    offset += n;
  }
  MESSAGE(fmt::format("worst gradient rel error {:.2e}", worst));
}

TEST_CASE("cuda model: one step of a dense DiffQKV + AugQ model matches the CPU") {
  SIGMA_REQUIRE_GPU();
  check_one_step_parity(cuda_dense_config());
}

// Runs on the CPU, so the premise of the MoE parity test holds wherever the tests run.
TEST_CASE("cuda model: the MoE parity model routes every token to its code's experts") {
  const ModelConfig config = cuda_moe_config();
  test::TinyModel m(config, kBatch, kSeqLen, Device::kCpu);
  with_routing_code(m);
  m.loss();
  const int32_t* tokens = m.model.tokens().i32();
  Tensor map = m.model.moe_layer(config.moe.dense_layers)->experts_NK();
  REQUIRE(map.size(1) == 2);
  const int32_t* experts = map.i32();
  int64_t off_code = 0;
  for (int64_t n = 0; n < m.model.tokens_per_pass(); ++n) {
    auto [first, second] = coded_experts(tokens[n], config.moe.n_experts);
    off_code += experts[2 * n] != first || experts[2 * n + 1] != second;
  }
  CHECK(off_code == 0);
}

TEST_CASE("cuda model: one step of an MoE model matches the CPU") {
  SIGMA_REQUIRE_GPU();
  check_one_step_parity(cuda_moe_config());
}

}  // namespace
}  // namespace sigma
