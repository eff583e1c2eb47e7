// The MoE model: parameter names (the HF contract), gradients through the router, the chosen
// weights and every balancing loss by finite differences, each balancing loss against
// hand-computed values, the balance metric, the expert-bias rule, global-batch LBL with one
// micro-batch equal to micro-batch LBL, and the top-k phase switch.
#include "core/random.h"
#include "models/model_plan.h"
#include "models/transformer.h"
#include "test/tiny_model.h"

#include <doctest/doctest.h>

#include <cmath>
#include <map>

using namespace sigma;

namespace {

ModelConfig tiny_moe(RouterScore score, bool renormalize, int64_t dense_layers) {
  ModelConfig c;
  c.n_layers = 2;
  c.d_model = 16;
  c.d_ff = 24;
  c.vocab_size = 11;
  c.init_std = 0.3;  // large weights: gradients well above fp32 round-off
  c.attention = {4, 2, 2, 4, 4, 0, true};
  c.moe.n_experts = 4;
  c.moe.d_expert = 8;
  c.moe.n_shared_experts = 1;
  c.moe.d_shared_expert = 6;
  c.moe.dense_layers = dense_layers;
  c.moe.score = score;
  c.moe.renormalize = renormalize;
  c.moe.top_k = {2, 3};
  c.moe.phases = {{0.5, {1}}};
  c.moe.lbl_coeff = 0.1;
  c.moe.top1_lbl_coeff = 0.1;
  c.moe.top1_lbl_temperature = 0.5;
  c.moe.z_loss_coeff = 0.01;
  return c;
}

// The MoE tests also read which experts each token chose.
struct TinyModel : test::TinyModel {
  using test::TinyModel::TinyModel;
  std::vector<int32_t> routing() {
    std::vector<int32_t> all;
    for (int64_t l = 0; l < model.config().n_layers; ++l)
      if (MoeLayer* moe = model.moe_layer(l))
        all.insert(all.end(), moe->experts_NK().i32(),
                   moe->experts_NK().i32() + moe->experts_NK().numel());
    return all;
  }
};

// Finite differences of every parameter. A probe whose perturbation changes the routing
// (top-k is piecewise constant) is skipped: the function is not smooth there.
void check_gradients(const ModelConfig& config) {
  TinyModel m(config);
  m.model.forward();
  std::vector<int32_t> routing = m.routing();
  test::GradientCheckCounts counts =
      test::check_gradients_numerically(m, [&] { return m.routing() == routing; });
  CHECK(counts.skipped * 10 <= counts.checked);  // the check must cover nearly every probe
}

// A router over D = E = 2 with an identity gate, so h is the logits.
struct TinyRouter {
  explicit TinyRouter(const ModelConfig& config)
      : config(config), params(Device::kCpu), acts(Device::kCpu), router(config, 4, 1) {
    router.bind_params(params, "gate.");
    params.allocate();
    router.bind_params(params, "gate.");
    router.layout_acts(acts, "a");
    h_buf = acts.take({4, 2}, DType::kF32, "a");
    acts.allocate();
    router.layout_acts(acts, "a");
    h_buf = acts.take({4, 2}, DType::kF32, "a");
    float* w = params.list()[0].param.value.f32();
    w[0] = 1, w[1] = 0, w[2] = 0, w[3] = 1;
    // Softmax scores [.75 .25], [.25 .75], [.75 .25], [.75 .25]: top-1 counts 3 and 1.
    float l3 = float(std::log(3.0));
    float h[] = {l3, 0, 0, l3, l3, 0, l3, 0};
    std::copy(h, h + 8, h_buf.f32());
  }
  // Balancing values with these counts [E] (a host tensor: the router is on the CPU).
  RouterBalance balance(std::vector<int32_t> counts) {
    router.balance(counts_tensor(counts));
    return router.balance_values();
  }
  void update_bias(std::vector<int32_t> counts) { router.update_bias(counts_tensor(counts)); }
  Tensor counts_tensor(std::vector<int32_t>& counts) {
    Tensor t;
    t.data = counts.data();
    t.shape = {int64_t(counts.size())};
    t.dtype = DType::kI32;
    return t;
  }

  const ModelConfig& config;
  ParameterSet params;
  Arena acts;
  Router router;
  Tensor h_buf;
};

}  // namespace

TEST_CASE("moe: parameter names and shapes follow the Hugging Face contract") {
  ModelConfig c = tiny_moe(RouterScore::kSoftmax, true, 1);
  ParameterSet params(Device::kCpu);
  Transformer model(c, 1, 4);
  model.bind_params(params);
  std::map<std::string, Shape> shapes;
  for (const ParamInfo& p : params.list()) shapes[p.name] = p.shape;
  const std::string m = "model.layers.1.mlp.";
  CHECK(shapes.at(m + "gate.weight") == Shape{4, 16});
  CHECK(shapes.at(m + "experts.gate_proj.weight") == Shape{4, 8, 16});
  CHECK(shapes.at(m + "experts.up_proj.weight") == Shape{4, 8, 16});
  CHECK(shapes.at(m + "experts.down_proj.weight") == Shape{4, 16, 8});
  CHECK(shapes.at(m + "shared_expert.gate_proj.weight") == Shape{6, 16});
  CHECK(shapes.at(m + "shared_expert.down_proj.weight") == Shape{16, 6});
  CHECK(shapes.at("model.layers.0.mlp.gate_proj.weight") == Shape{24, 16});  // a dense layer
  CHECK(shapes.count("model.layers.0.mlp.gate.weight") == 0);

  ModelPlan plan = plan_model(c, 1, 4);
  REQUIRE(plan.moe_phases.size() == 2);
  int64_t expert = 3 * 16 * 8;
  // Layer 1 (the only MoE layer) runs top-1 of 4 experts in the first phase, then top-3.
  CHECK(plan.moe_phases[1].active_params == plan.total_params - 11 * 16 - 1 * expert);
  CHECK(plan.moe_phases[0].active_params == plan.total_params - 11 * 16 - 3 * expert);
}

TEST_CASE("moe: gradients match finite differences (softmax, renormalised, shared expert)") {
  check_gradients(tiny_moe(RouterScore::kSoftmax, true, 0));
}

TEST_CASE("moe: gradients match finite differences (sigmoid, raw weights, dense first layer)") {
  ModelConfig c = tiny_moe(RouterScore::kSigmoid, false, 1);
  c.moe.n_shared_experts = 0;
  c.moe.d_shared_expert = 0;
  check_gradients(c);
}

TEST_CASE("moe: gradients match finite differences in the top-1 phase") {
  ModelConfig c = tiny_moe(RouterScore::kSoftmax, false, 0);
  c.moe.top_k = {1};
  c.moe.phases.clear();
  check_gradients(c);
}

TEST_CASE("moe: each balancing loss equals its hand-computed value") {
  ModelConfig c;
  c.d_model = 2;
  c.moe.n_experts = 2;
  c.moe.d_expert = 1;
  c.moe.top1_lbl_coeff = 1;
  c.moe.top1_lbl_temperature = 1;  // fhat is then the mean score p
  TinyRouter r(c);
  r.router.forward(r.h_buf);
  RouterBalance b = r.balance({3, 1});
  // f = (3/4, 1/4), p = (2.5/4, 1.5/4): LBL = 2 (0.75 * 0.625 + 0.25 * 0.375) = 1.125.
  CHECK(b.lbl == doctest::Approx(1.125));
  // sum p^2 = 0.53125 over the mean top-1 probability 0.75, times 2.
  CHECK(b.top1_lbl == doctest::Approx(2 * 0.53125 / 0.75));
  // Every row's logsumexp is log 4.
  CHECK(b.z_loss == doctest::Approx(std::log(4.0) * std::log(4.0)));
  CHECK(b.entropy == doctest::Approx(-(0.75 * std::log(0.75) + 0.25 * std::log(0.25))));
  CHECK(b.aux == doctest::Approx(b.top1_lbl));  // only the Top-1 LBL has a coefficient
  // Balanced counts (from the step's other micro-batches, say) give exactly 1.
  CHECK(r.balance({2, 2}).lbl == doctest::Approx(1.0));
}

TEST_CASE("moe: the balance metric and the expert-bias update") {
  LoadBalance b = load_balance({6, 2, 0, 0});
  CHECK(b.max_dev_pct == doctest::Approx(200.0));
  CHECK(b.min_dev_pct == doctest::Approx(-100.0));
  CHECK(b.idle_experts == 2);

  ModelConfig c;
  c.d_model = 2;
  c.moe.n_experts = 2;
  c.moe.d_expert = 1;
  c.moe.bias_update_rate = 0.25;
  TinyRouter r(c);
  REQUIRE(r.router.bias().defined());
  r.update_bias({3, 1});  // expert 0 is overloaded: its bias falls, expert 1's rises
  CHECK(r.router.bias().f32()[0] == -0.25f);
  CHECK(r.router.bias().f32()[1] == 0.25f);
  r.update_bias({2, 2});  // balanced: unchanged
  CHECK(r.router.bias().f32()[0] == -0.25f);
  // Bias 0.5 towards expert 1 flips row 0 (scores .75/.25) but not the weights.
  r.update_bias({3, 1});
  r.router.forward(r.h_buf);
  CHECK(r.router.experts_NK().i32()[0] == 1);
  CHECK(r.router.probs_NK().f32()[0] == doctest::Approx(0.25));
}

TEST_CASE("moe: global-batch LBL over one micro-batch equals micro-batch LBL") {
  ModelConfig c = tiny_moe(RouterScore::kSoftmax, true, 0);
  c.moe.top1_lbl_coeff = 0;
  TinyModel micro(c);
  micro.params.zero_grads();
  micro.model.forward();
  double aux_micro = micro.model.aux_loss();
  micro.model.backward(0.1f);

  c.moe.lbl_scope = LblScope::kGlobalBatch;
  TinyModel global(c);
  // What the trainer's routing pre-pass does with a single micro-batch.
  global.model.forward_layers();
  for (int64_t l = 0; l < c.n_layers; ++l) {
    MoeLayer* layer = global.model.moe_layer(l);
    layer->set_global_counts(layer->step_stats().counts);
    layer->reset_step_stats();
  }
  global.params.zero_grads();
  global.model.forward();
  CHECK(global.model.aux_loss() == aux_micro);
  global.model.backward(0.1f);
  CHECK(global.grads() == micro.grads());
}

TEST_CASE("moe: a step's first pass overwrites stale gradients, those of idle experts too") {
  ModelConfig c = tiny_moe(RouterScore::kSoftmax, true, 0);
  c.moe.n_experts = 32;  // 10 tokens x top-3 at most: some experts get no token
  test::TinyModel m(c);
  std::vector<float> from_zero = m.grads_of_two_passes_from_zero();
  CHECK(m.grads_of_two_passes_from_stale() == from_zero);
}

TEST_CASE("moe: a phase switch changes each layer's top-k and nothing else") {
  ModelConfig c = tiny_moe(RouterScore::kSoftmax, true, 0);
  CHECK(c.moe.phase_at(0, 10) == 0);
  CHECK(c.moe.phase_at(4, 10) == 0);
  CHECK(c.moe.phase_at(5, 10) == 1);  // steps completed >= 0.5 * 10: the final phase
  TinyModel m(c);
  CHECK(m.model.moe_layer(0)->top_k() == 2);
  CHECK(m.model.moe_layer(1)->top_k() == 3);
  m.model.set_moe_phase(0);
  CHECK(m.model.moe_layer(0)->top_k() == 1);
  CHECK(m.model.moe_layer(1)->top_k() == 1);
  double top1 = m.loss();
  m.model.set_moe_phase(1);
  double top23 = m.loss();
  m.model.set_moe_phase(0);
  CHECK(m.loss() == top1);  // switching back reproduces the same forward
  CHECK(top23 != top1);
}

TEST_CASE("moe: recomputing attention or whole layers gives the same loss and gradients") {
  ModelConfig c = tiny_moe(RouterScore::kSoftmax, false, 1);
  std::vector<float> reference;
  double reference_loss = 0;
  for (Recompute mode : {Recompute::kNone, Recompute::kAttention, Recompute::kLayer}) {
    test::TinyModel m(c, 2, 5, Device::kCpu, mode);
    m.params.zero_grads();
    double loss = m.loss();
    m.model.backward(float(1.0 / double(m.model.tokens_per_pass())));
    if (mode == Recompute::kNone) {
      reference = m.grads();
      reference_loss = loss;
      continue;
    }
    CHECK(loss == reference_loss);
    CHECK(m.grads() == reference);
  }
}
