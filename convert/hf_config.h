// Which Hugging Face architecture a Sigma model is, and its config.json, both ways.
//
// A model is exported as a native transformers architecture only where that architecture
// computes exactly what sigma computes (DESIGN.md, Contracts; SIGMA-FAMILY.md sections 1-2):
//   LlamaForCausalLM     dense, n_k == n_v, d_qk == d_v, no AugQ, no QK-norm
//   Qwen3ForCausalLM     the same with QK-norm
//   Qwen3MoeForCausalLM  QK-norm + softmax top-k MoE, one top-k for every MoE layer, no
//                        shared expert, no expert bias (the first dense layers become
//                        mlp_only_layers)
// and otherwise as SigmaForCausalLM, our own configuration_sigma.py / modeling_sigma.py
// (convert/python/, loaded with trust_remote_code), which implements DiffQKV, AugQ, QK-norm,
// and the MoE with per-layer top-k, sigmoid scores, shared experts and the expert bias.
#pragma once

#include "models/config.h"

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace sigma {

enum class HfArchitecture { kLlama, kQwen3, kQwen3Moe, kSigma };
const char* hf_architecture_name(HfArchitecture arch);  // "LlamaForCausalLM", ...

// The architecture of `config` whose MoE layers use `top_k` (the per-layer list of the phase
// exported). `why_custom` receives the first reason a native one does not fit.
HfArchitecture choose_hf_architecture(const ModelConfig& config, const std::vector<int64_t>& top_k,
                                      std::string* why_custom);

struct HfConfigExtras {
  int64_t max_positions = 0;  // max_position_embeddings: the training sequence length
  int64_t eos_id = -1;
  std::string dtype;  // "float32" or "bfloat16"
};

// config.json of `config` as `arch`; top_k is the exported phase's per-layer list.
nlohmann::json hf_config_json(const ModelConfig& config, HfArchitecture arch,
                              const std::vector<int64_t>& top_k, const HfConfigExtras& extras);

// The Sigma model a config.json describes, and its architecture. `shown` names the file in
// errors: an unsupported architecture or feature is one UserError line.
struct ImportedConfig {
  ModelConfig model;
  HfArchitecture arch = HfArchitecture::kLlama;
  int64_t max_positions = 0;
};
ImportedConfig model_config_from_hf(const nlohmann::json& config, const std::string& shown);

}  // namespace sigma
