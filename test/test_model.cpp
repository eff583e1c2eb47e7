// The dense Sigma model as a whole: parameter names and shapes (the HF contract), a
// finite-difference check of every parameter's gradient, and gradient accumulation.
#include "core/random.h"
#include "models/model_plan.h"
#include "models/transformer.h"
#include "test/tiny_model.h"

#include <doctest/doctest.h>

#include <cmath>
#include <map>

using namespace sigma;

namespace {

ModelConfig tiny_config(bool augq, bool qk_norm, bool tied) {
  ModelConfig c;
  c.n_layers = 2;
  c.d_model = 16;
  c.d_ff = 24;
  c.vocab_size = 11;
  c.tie_embeddings = tied;
  c.init_std = 0.3;  // large weights give gradients well above fp32 round-off
  c.attention = {4, 1, 2, 4, 6, augq ? 10 : 0, qk_norm};
  return c;
}

using test::TinyModel;

void check_gradients(const ModelConfig& config) {
  TinyModel m(config);
  test::check_gradients_numerically(m, [] { return true; });
}

}  // namespace

TEST_CASE("model: parameter names and shapes follow the Hugging Face contract") {
  ModelConfig c = tiny_config(true, true, false);
  ParameterSet params(Device::kCpu);
  Transformer model(c, 1, 4);
  model.bind_params(params);
  std::map<std::string, Shape> shapes;
  for (const ParamInfo& p : params.list()) shapes[p.name] = p.shape;
  const std::string a = "model.layers.1.self_attn.";
  CHECK(shapes.at("model.embed_tokens.weight") == Shape{11, 16});
  CHECK(shapes.at(a + "q_proj.weight") == Shape{16, 16});
  CHECK(shapes.at(a + "k_proj.weight") == Shape{4, 16});
  CHECK(shapes.at(a + "v_proj.weight") == Shape{12, 16});
  CHECK(shapes.at(a + "o_proj.weight") == Shape{16, 24});
  CHECK(shapes.at(a + "q_gate_proj.weight") == Shape{10, 16});
  CHECK(shapes.at(a + "q_up_proj.weight") == Shape{10, 16});
  CHECK(shapes.at(a + "q_down_proj.weight") == Shape{16, 10});
  CHECK(shapes.at(a + "q_norm.weight") == Shape{4});
  CHECK(shapes.at(a + "k_norm.weight") == Shape{4});
  CHECK(shapes.at("model.layers.0.input_layernorm.weight") == Shape{16});
  CHECK(shapes.at("model.layers.0.post_attention_layernorm.weight") == Shape{16});
  CHECK(shapes.at("model.layers.0.mlp.gate_proj.weight") == Shape{24, 16});
  CHECK(shapes.at("model.layers.0.mlp.down_proj.weight") == Shape{16, 24});
  CHECK(shapes.at("model.norm.weight") == Shape{16});
  CHECK(shapes.at("lm_head.weight") == Shape{11, 16});
  CHECK(shapes.size() == 3 + 2 * 14);
}

TEST_CASE("model: tied embeddings have no lm_head and count once") {
  ModelConfig c = tiny_config(false, false, true);
  ParameterSet params(Device::kCpu);
  Transformer model(c, 1, 4);
  model.bind_params(params);
  for (const ParamInfo& p : params.list()) CHECK(p.name != "lm_head.weight");
  ModelPlan plan = plan_model(c, 1, 4);
  CHECK(plan.total_params == params.num_elements());
  CHECK(plan.active_params == plan.total_params);  // the tied matrix is the LM head
}

TEST_CASE("model: gradients match finite differences (DiffQKV + AugQ, untied)") {
  check_gradients(tiny_config(true, false, false));
}

TEST_CASE("model: gradients match finite differences (QK-norm, tied)") {
  check_gradients(tiny_config(false, true, true));
}

TEST_CASE("model: gradients accumulate over micro-batches") {
  ModelConfig c = tiny_config(true, true, false);
  TinyModel m(c);
  m.params.zero_grads();
  m.model.forward();
  m.model.backward(1.0f);
  m.model.forward();
  m.model.backward(1.0f);
  std::vector<float> twice = m.grads();
  m.params.zero_grads();
  m.model.forward();
  m.model.backward(2.0f);
  size_t k = 0;
  for (const ParamInfo& p : m.params.list())
    for (int64_t i = 0; i < p.shape.numel(); ++i, ++k)
      CHECK(p.param.grad.f32()[i] == doctest::Approx(twice[k]).epsilon(1e-5));
}

TEST_CASE("model: a step's first pass overwrites stale gradients (untied AugQ, tied QK-norm)") {
  for (const ModelConfig& c : {tiny_config(true, false, false), tiny_config(false, true, true)}) {
    TinyModel m(c);
    std::vector<float> from_zero = m.grads_of_two_passes_from_zero();
    CHECK(m.grads_of_two_passes_from_stale() == from_zero);
  }
}

TEST_CASE("model: initialisation is per-name deterministic") {
  ModelConfig c = tiny_config(true, false, false);
  TinyModel a(c), b(c);
  for (size_t i = 0; i < a.params.list().size(); ++i) {
    const ParamInfo& pa = a.params.list()[i];
    const ParamInfo& pb = b.params.list()[i];
    CHECK(std::equal(pa.param.value.f32(), pa.param.value.f32() + pa.shape.numel(),
                     pb.param.value.f32()));
  }
}

TEST_CASE("model: recomputing attention or whole layers gives the same loss and gradients") {
  for (const ModelConfig& c : {tiny_config(true, true, false), tiny_config(false, false, true)}) {
    std::vector<float> reference;
    double reference_loss = 0;
    for (Recompute mode : {Recompute::kNone, Recompute::kAttention, Recompute::kLayer}) {
      TinyModel m(c, 2, 5, Device::kCpu, mode);
      m.params.zero_grads();
      double loss = m.loss();
      m.model.backward(float(1.0 / double(m.model.tokens_per_pass())));
      if (mode == Recompute::kNone) {
        reference = m.grads();
        reference_loss = loss;
        continue;
      }
      CHECK(loss == reference_loss);
      CHECK(m.grads() == reference);  // the same ops on the same inputs: the same bits
    }
  }
}
