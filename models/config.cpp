// The [model] and [model.attention] recipe keys and their cross-field checks.
// Sigma paper (arXiv 2501.13629) section 2 for DiffQKV and AugQ; SIGMA-FAMILY.md section 1.
// Leaves out: MoE keys (they arrive with the MoE issue).
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
        .table("attention", &ModelConfig::attention, attention);
    return model;
  }();
  return section;
}

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
}

}  // namespace sigma
