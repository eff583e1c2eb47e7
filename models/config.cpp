// The [model], [model.attention] and [model.moe] recipe keys and their cross-field checks.
// Sigma paper (arXiv 2501.13629) section 2 for DiffQKV and AugQ; SIGMA-FAMILY.md section 1;
// Sigma-MoE-Tiny (arXiv 2512.16248) for the router, balancing and progressive sparsification.
#include "core/recipe/sections.h"

#include <fmt/format.h>

namespace sigma {

using schema::Range;

const schema::Section<ModelConfig>& model_section() {
  static const schema::Section<ModelConfig> section = [] {
    schema::Section<AttentionConfig> attention(
        "DiffQKV attention: separate head counts for Q, K and V, and the AugQ block on Q "
        "(Sigma paper section 2).");
    attention
        .key("n_q", &AttentionConfig::n_q, "query heads", Range::at_least(1))
        .key("n_k", &AttentionConfig::n_k,
             "key heads; divides n_q (query head i reads key head i * n_k / n_q)",
             Range::at_least(1))
        .key("n_v", &AttentionConfig::n_v,
             "value heads; divides n_q; may differ from n_k (DiffQKV)", Range::at_least(1))
        .key("d_qk", &AttentionConfig::d_qk, "head dim of Q and K; even (RoPE rotates pairs)",
             Range::at_least(2))
        .key("d_v", &AttentionConfig::d_v, "head dim of V; o_proj is [d_model, n_q * d_v]",
             Range::at_least(1))
        .key("d_augq", &AttentionConfig::d_augq,
             "inner width of the AugQ SwiGLU block after q_proj; 0 disables AugQ",
             Range::at_least(0))
        .key("qk_norm", &AttentionConfig::qk_norm,
             "RMSNorm over each Q and K head before RoPE (Sigma-MoE-Tiny)");

    schema::Section<MoePhase> phase(
        "One progressive-sparsification phase: its per-layer top-k, used until a fraction of "
        "the run's optimizer steps.");
    phase
        .key("until", &MoePhase::until,
             "the phase runs while (steps completed) < until * (total steps); phases are "
             "ordered by it",
             Range{0.0, 1.0, true, true}, "fraction of steps")
        .key("top_k", &MoePhase::top_k,
             "experts per token, per layer; the last value repeats for the remaining layers",
             Range::at_least(1));

    schema::Section<MoeConfig> moe(
        "Mixture of experts: a linear fp32 router picks top-k fine-grained SwiGLU experts per "
        "token, dropless (Sigma-MoE-Tiny; models/moe/README.md). n_experts = 0 keeps the "
        "model dense.");
    moe.key("n_experts", &MoeConfig::n_experts, "routed experts per MoE layer; 0 = dense model",
            Range::at_least(0))
        .key("d_expert", &MoeConfig::d_expert, "SwiGLU inner width of one routed expert",
             Range::at_least(0))
        .key("n_shared_experts", &MoeConfig::n_shared_experts,
             "always-on shared experts (one fused SwiGLU of n * d_shared_expert)",
             Range::at_least(0))
        .key("d_shared_expert", &MoeConfig::d_shared_expert,
             "inner width of one shared expert; 0 means d_expert", Range::at_least(0))
        .key("dense_layers", &MoeConfig::dense_layers,
             "the first layers keep the dense MLP of width d_ff", Range::at_least(0))
        .key("score", &MoeConfig::score, "router score function over the fp32 logits",
             {{RouterScore::kSoftmax, "softmax"}, {RouterScore::kSigmoid, "sigmoid"}})
        .key("renormalize", &MoeConfig::renormalize,
             "divide the chosen experts' scores by their sum (with top-1 softmax every weight "
             "becomes 1 and the router learns only from the balancing losses)")
        .key("top_k", &MoeConfig::top_k,
             "experts per token, per layer, of the final phase; the last value repeats for the "
             "remaining layers",
             Range::at_least(1))
        .key("phases", &MoeConfig::phases,
             "progressive sparsification: earlier phases with their own top_k; empty = top_k "
             "throughout",
             phase)
        .key("lbl_coeff", &MoeConfig::lbl_coeff,
             "load-balancing loss N_E * sum_i f_i * p_i per MoE layer (1.0 when balanced)",
             Range::at_least(0))
        .key("lbl_scope", &MoeConfig::lbl_scope,
             "where f_i's token counts come from: this micro-batch, or every micro-batch of "
             "the step (a routing pre-pass; models/moe/README.md)",
             {{LblScope::kMicroBatch, "micro_batch"}, {LblScope::kGlobalBatch, "global_batch"}})
        .key("top1_lbl_coeff", &MoeConfig::top1_lbl_coeff,
             "Top-1 LBL N_E * sum_i fhat_i^2 / mean top-1 probability (Sigma-MoE-Tiny)",
             Range::at_least(0))
        .key("top1_lbl_temperature", &MoeConfig::top1_lbl_temperature,
             "temperature tau of fhat = mean softmax(logits / tau) in the Top-1 LBL",
             Range::above(0))
        .key("z_loss_coeff", &MoeConfig::z_loss_coeff,
             "router z-loss mean_n logsumexp(logits_n)^2 (ST-MoE)", Range::at_least(0))
        .key("bias_update_rate", &MoeConfig::bias_update_rate,
             "aux-loss-free expert bias (DeepSeek-V3): after each step b_i += rate * "
             "sign(mean load - load_i); the bias steers selection only; 0 disables",
             Range::at_least(0));

    schema::Section<ModelConfig> model("The model family and its shape.");
    model
        .key("family", &ModelConfig::family, "model family (dense Sigma; MoE families later)",
             {{ModelFamily::kSigma, "sigma"}})
        .key("n_layers", &ModelConfig::n_layers, "transformer layers", Range::at_least(1))
        .key("d_model", &ModelConfig::d_model, "hidden size", Range::at_least(1))
        .key("d_ff", &ModelConfig::d_ff, "SwiGLU inner width of the MLP", Range::at_least(1))
        .key("vocab_size", &ModelConfig::vocab_size,
             "rows of the embedding and of lm_head; at least the tokenizer's ids",
             Range::at_least(1))
        .key("norm_eps", &ModelConfig::norm_eps, "RMSNorm epsilon", Range::above(0))
        .key("rope_theta", &ModelConfig::rope_theta, "RoPE base frequency", Range::above(0))
        .key("tie_embeddings", &ModelConfig::tie_embeddings,
             "lm_head shares the embedding matrix (no lm_head.weight)")
        .key("init_std", &ModelConfig::init_std, "std of the normal init of every matrix",
             Range::above(0))
        .key("init_scale_residual", &ModelConfig::init_scale_residual,
             "o_proj and down_proj init std divided by sqrt(2 * n_layers) (GPT-2)")
        .table("attention", &ModelConfig::attention, attention)
        .table("moe", &ModelConfig::moe, moe);
    return model;
  }();
  return section;
}

namespace {

void check_top_k(const std::vector<int64_t>& top_k, const std::string& key,
                 const ModelConfig& model, const schema::Checker& check) {
  if (int64_t(top_k.size()) > model.n_layers)
    check.fail(key, fmt::format("{} values for model.n_layers = {} layers; allowed: at most one "
                                "per layer (the last repeats)",
                                top_k.size(), model.n_layers));
  for (int64_t k : top_k)
    if (k > model.moe.n_experts)
      check.fail(key, fmt::format("top-k {} exceeds model.moe.n_experts = {}; allowed: 1 .. {}", k,
                                  model.moe.n_experts, model.moe.n_experts));
}

void check_moe(const ModelConfig& model, const schema::Checker& check) {
  const MoeConfig& m = model.moe;
  if (!m.enabled()) {
    if (!m.phases.empty() || m.dense_layers > 0 || m.d_expert > 0 || m.n_shared_experts > 0)
      check.fail("model.moe.n_experts",
                 "0 (a dense model) but other [model.moe] keys are set; allowed: n_experts >= 1 "
                 "to use them");
    return;
  }
  if (m.d_expert == 0)
    check.fail("model.moe.d_expert", "0 with n_experts set; allowed: >= 1");
  if (m.dense_layers >= model.n_layers)
    check.fail("model.moe.dense_layers",
               fmt::format("{} leaves no MoE layer of model.n_layers = {}; allowed: < {}",
                           m.dense_layers, model.n_layers, model.n_layers));
  check_top_k(m.top_k, "model.moe.top_k", model, check);
  double previous = 0;
  for (size_t i = 0; i < m.phases.size(); ++i) {
    std::string key = fmt::format("model.moe.phases[{}]", i);
    if (m.phases[i].until <= previous)
      check.fail(key + ".until",
                 fmt::format("{} is not after the previous phase's {}; allowed: increasing "
                             "fractions in (0, 1)",
                             m.phases[i].until, previous));
    previous = m.phases[i].until;
    check_top_k(m.phases[i].top_k, key + ".top_k", model, check);
  }
}

}  // namespace

void check_model(const ModelConfig& model, const schema::Checker& check) {
  const AttentionConfig& a = model.attention;
  // Query head i shares key head i * n_k / n_q: the grouping needs n_k | n_q (same for V).
  if (a.n_q % a.n_k != 0)
    check.fail("model.attention.n_k",
               fmt::format("{} does not divide model.attention.n_q = {}; allowed: a divisor of "
                           "n_q",
                           a.n_k, a.n_q));
  if (a.n_q % a.n_v != 0)
    check.fail("model.attention.n_v",
               fmt::format("{} does not divide model.attention.n_q = {}; allowed: a divisor of "
                           "n_q",
                           a.n_v, a.n_q));
  if (a.d_qk % 2 != 0)
    check.fail("model.attention.d_qk",
               fmt::format("{} is odd; allowed: an even number (RoPE rotates pairs of dims)",
                           a.d_qk));
  check_moe(model, check);
}

}  // namespace sigma
