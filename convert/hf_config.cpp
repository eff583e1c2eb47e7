#include "convert/hf_config.h"

#include "core/error.h"

#include <fmt/format.h>

#include <algorithm>

namespace sigma {

using nlohmann::json;

const char* hf_architecture_name(HfArchitecture arch) {
  switch (arch) {
    case HfArchitecture::kLlama: return "LlamaForCausalLM";
    case HfArchitecture::kQwen3: return "Qwen3ForCausalLM";
    case HfArchitecture::kQwen3Moe: return "Qwen3MoeForCausalLM";
    case HfArchitecture::kSigma: return "SigmaForCausalLM";
  }
  return "?";
}

namespace {

// top_k of every layer (the last value repeats), as config.json lists it.
std::vector<int64_t> per_layer(const std::vector<int64_t>& top_k, int64_t layers) {
  std::vector<int64_t> all;
  for (int64_t l = 0; l < layers; ++l) all.push_back(MoeConfig::at_layer(top_k, l));
  return all;
}

std::string first_reason(const ModelConfig& c, const std::vector<int64_t>& top_k) {
  const AttentionConfig& a = c.attention;
  const MoeConfig& m = c.moe;
  if (a.d_augq > 0) return "AugQ";
  if (a.n_k != a.n_v) return fmt::format("DiffQKV with n_k {} != n_v {}", a.n_k, a.n_v);
  if (a.d_qk != a.d_v) return fmt::format("d_qk {} != d_v {}", a.d_qk, a.d_v);
  if (!m.enabled()) return "";
  if (!a.qk_norm) return "an MoE without QK-norm";
  if (m.score != RouterScore::kSoftmax) return "a sigmoid router";
  if (m.n_shared_experts > 0) return "shared experts";
  if (m.bias_update_rate > 0) return "the expert bias";
  std::vector<int64_t> all = per_layer(top_k, c.n_layers);
  for (int64_t l = m.dense_layers; l < c.n_layers; ++l)
    if (all[size_t(l)] != all[size_t(m.dense_layers)]) return "a top-k that differs by layer";
  return "";
}

json common(const ModelConfig& c, HfArchitecture arch, const HfConfigExtras& extras) {
  const AttentionConfig& a = c.attention;
  json j;
  j["architectures"] = {hf_architecture_name(arch)};
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.d_model;
  j["intermediate_size"] = c.d_ff;
  j["num_hidden_layers"] = c.n_layers;
  j["num_attention_heads"] = a.n_q;
  j["head_dim"] = a.d_qk;
  j["hidden_act"] = "silu";
  j["max_position_embeddings"] = extras.max_positions;
  j["rms_norm_eps"] = c.norm_eps;
  // transformers 4.x reads rope_theta; 5.x reads rope_parameters (and converts rope_theta).
  j["rope_theta"] = c.rope_theta;
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", c.rope_theta}};
  j["tie_word_embeddings"] = c.tie_embeddings;
  j["initializer_range"] = c.init_std;
  j["attention_bias"] = false;
  j["attention_dropout"] = 0.0;
  j["use_cache"] = true;
  j["bos_token_id"] = nullptr;
  if (extras.eos_id >= 0) j["eos_token_id"] = extras.eos_id;
  j["torch_dtype"] = extras.dtype;
  j["dtype"] = extras.dtype;
  return j;
}

}  // namespace

HfArchitecture choose_hf_architecture(const ModelConfig& config, const std::vector<int64_t>& top_k,
                                      std::string* why_custom) {
  std::string reason = first_reason(config, top_k);
  if (why_custom) *why_custom = reason;
  if (!reason.empty()) return HfArchitecture::kSigma;
  if (config.moe.enabled()) return HfArchitecture::kQwen3Moe;
  return config.attention.qk_norm ? HfArchitecture::kQwen3 : HfArchitecture::kLlama;
}

json hf_config_json(const ModelConfig& c, HfArchitecture arch, const std::vector<int64_t>& top_k,
                    const HfConfigExtras& extras) {
  const AttentionConfig& a = c.attention;
  const MoeConfig& m = c.moe;
  json j = common(c, arch, extras);
  switch (arch) {
    case HfArchitecture::kLlama:
      j["model_type"] = "llama";
      j["num_key_value_heads"] = a.n_k;
      j["mlp_bias"] = false;
      break;
    case HfArchitecture::kQwen3:
      j["model_type"] = "qwen3";
      j["num_key_value_heads"] = a.n_k;
      j["use_sliding_window"] = false;
      j["sliding_window"] = nullptr;
      j["max_window_layers"] = c.n_layers;
      break;
    case HfArchitecture::kQwen3Moe: {
      j["model_type"] = "qwen3_moe";
      j["num_key_value_heads"] = a.n_k;
      j["use_sliding_window"] = false;
      j["sliding_window"] = nullptr;
      j["num_experts"] = m.n_experts;
      j["num_experts_per_tok"] = MoeConfig::at_layer(top_k, m.dense_layers);
      j["moe_intermediate_size"] = m.d_expert;
      j["norm_topk_prob"] = m.renormalize;
      j["decoder_sparse_step"] = 1;
      std::vector<int64_t> dense(size_t(m.dense_layers));
      for (int64_t l = 0; l < m.dense_layers; ++l) dense[size_t(l)] = l;
      j["mlp_only_layers"] = dense;
      j["output_router_logits"] = false;
      j["router_aux_loss_coef"] = 0.0;
      break;
    }
    case HfArchitecture::kSigma:
      j["model_type"] = "sigma";
      j["auto_map"] = {{"AutoConfig", "configuration_sigma.SigmaConfig"},
                       {"AutoModelForCausalLM", "modeling_sigma.SigmaForCausalLM"}};
      j["num_key_heads"] = a.n_k;
      j["num_value_heads"] = a.n_v;
      j["v_head_dim"] = a.d_v;
      j["augq_intermediate_size"] = a.d_augq;
      j["qk_norm"] = a.qk_norm;
      j["num_experts"] = m.n_experts;
      j["moe_intermediate_size"] = m.d_expert;
      j["shared_expert_intermediate_size"] = m.shared_width();
      j["first_k_dense_layers"] = m.dense_layers;
      j["router_score"] = m.score == RouterScore::kSoftmax ? "softmax" : "sigmoid";
      j["norm_topk_prob"] = m.renormalize;
      j["num_experts_per_tok"] =
          m.enabled() ? per_layer(top_k, c.n_layers) : std::vector<int64_t>{};
      // The bias is state; its rate only matters to a run that continues training the model.
      j["expert_bias_update_rate"] = m.bias_update_rate;
      break;
  }
  return j;
}

namespace {

// Reads config.json values with one-line errors naming the file and the key.
struct Reader {
  const json& j;
  const std::string& shown;

  template <typename T>
  T get(const char* key) const {
    if (!j.contains(key) || j[key].is_null()) fail("{}: missing \"{}\"", shown, key);
    try {
      return j[key].get<T>();
    } catch (const json::exception&) {
      fail("{}: \"{}\" has the wrong type ({})", shown, key, j[key].dump());
    }
  }
  template <typename T>
  T get_or(const char* key, T fallback) const {
    return j.contains(key) && !j[key].is_null() ? get<T>(key) : fallback;
  }
  void require(bool ok, const std::string& what) const {
    if (!ok) fail("{}: {}; sigma cannot import this model exactly", shown, what);
  }
};

double rope_theta_of(const Reader& r) {
  if (r.j.contains("rope_theta") && !r.j["rope_theta"].is_null())
    return r.get<double>("rope_theta");
  if (r.j.contains("rope_parameters") && r.j["rope_parameters"].is_object()) {
    const json& p = r.j["rope_parameters"];
    r.require(p.value("rope_type", "default") == "default",
              "rope_parameters.rope_type is not \"default\"");
    if (p.contains("rope_theta")) return p["rope_theta"].get<double>();
  }
  return 10000.0;
}

}  // namespace

ImportedConfig model_config_from_hf(const json& j, const std::string& shown) {
  Reader r{j, shown};
  std::string arch_name;
  if (j.contains("architectures") && j["architectures"].is_array() && !j["architectures"].empty())
    arch_name = j["architectures"][0].get<std::string>();
  ImportedConfig out;
  const HfArchitecture all[] = {HfArchitecture::kLlama, HfArchitecture::kQwen3,
                                HfArchitecture::kQwen3Moe, HfArchitecture::kSigma};
  auto found = std::find_if(std::begin(all), std::end(all),
                            [&](HfArchitecture a) { return arch_name == hf_architecture_name(a); });
  if (found == std::end(all))
    fail(
        "{}: architecture \"{}\" is not supported; allowed: LlamaForCausalLM, Qwen3ForCausalLM, "
        "Qwen3MoeForCausalLM, SigmaForCausalLM",
        shown, arch_name.empty() ? "(none)" : arch_name);
  out.arch = *found;
  ModelConfig& c = out.model;
  AttentionConfig& a = c.attention;
  MoeConfig& m = c.moe;
  c.vocab_size = r.get<int64_t>("vocab_size");
  c.d_model = r.get<int64_t>("hidden_size");
  c.d_ff = r.get<int64_t>("intermediate_size");
  c.n_layers = r.get<int64_t>("num_hidden_layers");
  c.norm_eps = r.get_or<double>("rms_norm_eps", 1e-6);
  c.rope_theta = rope_theta_of(r);
  c.tie_embeddings = r.get_or<bool>("tie_word_embeddings", false);
  c.init_std = r.get_or<double>("initializer_range", 0.02);
  a.n_q = r.get<int64_t>("num_attention_heads");
  a.d_qk = r.get_or<int64_t>("head_dim", c.d_model / a.n_q);
  a.d_v = a.d_qk;
  out.max_positions = r.get_or<int64_t>("max_position_embeddings", 2048);
  r.require(r.get_or<std::string>("hidden_act", "silu") == "silu", "hidden_act is not silu");
  r.require(!r.get_or<bool>("attention_bias", false), "attention_bias is true");
  r.require(!r.get_or<bool>("mlp_bias", false), "mlp_bias is true");
  r.require(!j.contains("rope_scaling") || j["rope_scaling"].is_null(), "rope_scaling is set");
  if (out.arch == HfArchitecture::kSigma) {
    a.n_k = r.get<int64_t>("num_key_heads");
    a.n_v = r.get<int64_t>("num_value_heads");
    a.d_v = r.get<int64_t>("v_head_dim");
    a.d_augq = r.get_or<int64_t>("augq_intermediate_size", 0);
    a.qk_norm = r.get_or<bool>("qk_norm", false);
    m.n_experts = r.get_or<int64_t>("num_experts", 0);
    if (m.enabled()) {
      m.d_expert = r.get<int64_t>("moe_intermediate_size");
      int64_t shared = r.get_or<int64_t>("shared_expert_intermediate_size", 0);
      // The shared experts are one fused SwiGLU: import them as one of the full width.
      m.n_shared_experts = shared > 0 ? 1 : 0;
      m.d_shared_expert = shared;
      m.dense_layers = r.get_or<int64_t>("first_k_dense_layers", 0);
      std::string score = r.get_or<std::string>("router_score", "softmax");
      r.require(score == "softmax" || score == "sigmoid", "router_score is not softmax or sigmoid");
      m.score = score == "softmax" ? RouterScore::kSoftmax : RouterScore::kSigmoid;
      m.renormalize = r.get_or<bool>("norm_topk_prob", false);
      m.top_k = r.get<std::vector<int64_t>>("num_experts_per_tok");
      m.bias_update_rate = r.get_or<double>("expert_bias_update_rate", 0.0);
    }
    return out;
  }
  a.n_k = a.n_v = r.get_or<int64_t>("num_key_value_heads", a.n_q);
  a.qk_norm = out.arch != HfArchitecture::kLlama;
  if (out.arch == HfArchitecture::kQwen3Moe) {
    // transformers 5 saves the expert count as num_local_experts, 4.x as num_experts.
    m.n_experts = j.contains("num_local_experts") ? r.get<int64_t>("num_local_experts")
                                                  : r.get<int64_t>("num_experts");
    m.d_expert = r.get<int64_t>("moe_intermediate_size");
    m.top_k = {r.get<int64_t>("num_experts_per_tok")};
    m.renormalize = r.get_or<bool>("norm_topk_prob", false);
    r.require(r.get_or<int64_t>("decoder_sparse_step", 1) == 1, "decoder_sparse_step is not 1");
    std::vector<int64_t> dense = r.get_or<std::vector<int64_t>>("mlp_only_layers", {});
    for (size_t i = 0; i < dense.size(); ++i)
      r.require(dense[i] == int64_t(i), "mlp_only_layers is not the first layers");
    m.dense_layers = int64_t(dense.size());
  }
  if (out.arch != HfArchitecture::kLlama)
    r.require(!r.get_or<bool>("use_sliding_window", false), "use_sliding_window is true");
  return out;
}

}  // namespace sigma
