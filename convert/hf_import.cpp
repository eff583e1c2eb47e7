// sigma convert HF_DIR --from hf OUT_RUN: see convert/hf.h and convert/README.md.
#include "convert/hf.h"

#include "convert/hf_config.h"
#include "convert/hf_tokenizer.h"
#include "convert/safetensors.h"
#include "core/checkpoint/checkpoint.h"
#include "core/recipe/recipe.h"
#include "models/transformer.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <set>

namespace sigma {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// The recipe of an imported model: its [model] from config.json; data sources are the
// user's to add (--set data.sources=...), and [train] is a placeholder to override.
std::string recipe_toml(const ImportedConfig& imported, const std::string& tokenizer,
                        const std::string& out_run) {
  const ModelConfig& c = imported.model;
  const AttentionConfig& a = c.attention;
  const MoeConfig& m = c.moe;
  std::string text = fmt::format(
      "[run]\nname = \"{}\"\nout_dir = \"{}\"\n\n"
      "[model]\nn_layers = {}\nd_model = {}\nd_ff = {}\nvocab_size = {}\nnorm_eps = {}\n"
      "rope_theta = {}\ntie_embeddings = {}\ninit_std = {}\n\n"
      "[model.attention]\nn_q = {}\nn_k = {}\nn_v = {}\nd_qk = {}\nd_v = {}\nd_augq = {}\n"
      "qk_norm = {}\n\n",
      fs::path(out_run).filename().string(), fs::absolute(out_run).string(), c.n_layers, c.d_model,
      c.d_ff, c.vocab_size, c.norm_eps, c.rope_theta, c.tie_embeddings, c.init_std, a.n_q, a.n_k,
      a.n_v, a.d_qk, a.d_v, a.d_augq, a.qk_norm);
  if (m.enabled())
    text += fmt::format(
        "[model.moe]\nn_experts = {}\nd_expert = {}\nn_shared_experts = {}\nd_shared_expert = {}\n"
        "dense_layers = {}\nscore = \"{}\"\nrenormalize = {}\ntop_k = [{}]\nbias_update_rate = "
        "{}\n\n",
        m.n_experts, m.d_expert, m.n_shared_experts, m.d_shared_expert, m.dense_layers,
        m.score == RouterScore::kSoftmax ? "softmax" : "sigmoid", m.renormalize,
        fmt::join(m.top_k, ", "), m.bias_update_rate);
  // A long context window would plan a large training batch: 4096 at most, --set to change.
  text += fmt::format(
      "[data]\nsources = []\ntokenizer = \"{}\"\nseq_len = {}\n\n"
      "[train]\nsteps = 1000\nmicro_batch = 1\n",
      tokenizer, std::min<int64_t>(imported.max_positions, 4096));
  return text;
}

// The HF tensor(s) behind sigma parameter `name`: the same name, or for stacked experts the
// per-expert matrices (Qwen3-MoE's files) or the fused gate_up_proj of transformers 5.
std::vector<float> gather(const std::map<std::string, safetensors::TensorRead>& hf,
                          std::set<std::string>& used, const std::string& name, const Shape& shape,
                          const std::string& hf_dir) {
  auto take = [&](const std::string& key,
                  const std::vector<int64_t>& want) -> const std::vector<float>* {
    auto it = hf.find(key);
    if (it == hf.end()) return nullptr;
    if (it->second.shape != want)
      fail("{}: tensor {} has shape [{}]; the config implies [{}]", hf_dir, key,
           fmt::join(it->second.shape, ", "), fmt::join(want, ", "));
    used.insert(key);
    return &it->second.values;
  };
  std::vector<int64_t> dims(shape.dims.begin(), shape.dims.begin() + shape.rank);
  if (const std::vector<float>* whole = take(name, dims)) return *whole;
  static const std::regex stacked(R"((.*\.mlp\.experts)\.(gate_proj|up_proj|down_proj)\.weight)");
  std::smatch m;
  if (std::regex_match(name, m, stacked)) {
    int64_t experts = shape[0], rows = shape[1], cols = shape[2];
    std::vector<float> out;
    out.reserve(size_t(shape.numel()));
    for (int64_t e = 0; e < experts; ++e) {
      const std::vector<float>* one =
          take(fmt::format("{}.{}.{}.weight", m[1].str(), e, m[2].str()), {rows, cols});
      if (!one) break;
      out.insert(out.end(), one->begin(), one->end());
    }
    if (int64_t(out.size()) == shape.numel()) return out;
    if (m[2] != "down_proj") {  // transformers 5: gate_up_proj [E, 2F, D], gate rows first
      if (const std::vector<float>* fused =
              take(m[1].str() + ".gate_up_proj", {experts, 2 * rows, cols})) {
        out.clear();
        int64_t offset = m[2] == "gate_proj" ? 0 : rows * cols;
        for (int64_t e = 0; e < experts; ++e) {
          const float* src = fused->data() + e * 2 * rows * cols + offset;
          out.insert(out.end(), src, src + rows * cols);
        }
        return out;
      }
    } else if (const std::vector<float>* fused = take(m[1].str() + ".down_proj", dims)) {
      return *fused;
    }
  }
  fail("{}: no tensor {} (shape [{}]) in the safetensors files", hf_dir, name,
       fmt::join(dims, ", "));
}

}  // namespace

std::string import_hf(const std::string& hf_dir, const std::string& out_run) {
  fs::path config_path = fs::path(hf_dir) / "config.json";
  std::ifstream config_in(config_path);
  if (!config_in) fail("{}: not a Hugging Face model directory (no config.json)", hf_dir);
  json config = json::parse(config_in, nullptr, false);
  if (!config.is_object()) fail("{}: not valid JSON", config_path.string());
  ImportedConfig imported = model_config_from_hf(config, config_path.string());
  std::map<std::string, safetensors::TensorRead> hf = safetensors::read_dir(hf_dir);

  fs::create_directories(out_run);
  std::string tokenizer = import_hf_tokenizer(hf_dir, out_run);
  if (tokenizer.empty()) tokenizer = "byte";
  std::string recipe_path = (fs::path(out_run) / "recipe.toml").string();
  Recipe recipe = parse_recipe(recipe_toml(imported, tokenizer, out_run), recipe_path);

  ParameterSet params(Device::kCpu);
  Arena acts(Device::kCpu);
  Transformer model(recipe.model, 1, 1);
  model.bind_params(params);
  params.allocate();
  model.bind_params(params);
  model.layout_acts(acts);
  acts.allocate();
  model.layout_acts(acts);

  std::set<std::string> used;
  int64_t largest = 0;
  SaveRequest request;
  auto load = [&](const std::string& name, Tensor into) {
    std::vector<float> values = gather(hf, used, name, into.shape, hf_dir);
    std::copy(values.begin(), values.end(), into.f32());
    request.tensors.push_back({"model/" + name, into, into.shape, 0});
    largest = std::max(largest, into.numel());
  };
  for (const ParamInfo& p : params.list()) load(p.name, p.param.value);
  for (const auto& [name, tensor] : model.state_tensors()) load(name, tensor);
  if (recipe.model.tie_embeddings) used.insert("lm_head.weight");  // a tied copy, if saved
  for (const auto& [name, tensor] : hf)
    if (!used.count(name) && name.find("rotary_emb.inv_freq") == std::string::npos)
      fail("{}: tensor {} has no place in a {} of this config", hf_dir, name,
           hf_architecture_name(imported.arch));

  // AdamW starts afresh: zero moments, as at step 0 of a new run.
  Buffer zeros(size_t(largest) * sizeof(float), Device::kCpu);
  for (const ParamInfo& p : params.list()) {
    Tensor zero = zeros.tensor(0, p.shape, DType::kF32);
    request.tensors.push_back({"optim/m/" + p.name, zero, p.shape, 0});
    request.tensors.push_back({"optim/v/" + p.name, zero, p.shape, 0});
  }
  request.root = recipe.checkpoint.dir;
  request.step = 0;
  request.recipe_toml = recipe.resolved_toml;
  request.keep = 0;
  request.state.ints = {
      {"step", 0}, {"tokens", 0}, {"seed", int64_t(recipe.run.seed)}, {"loader_position", 0}};
  std::string dir = save_checkpoint(request);
  std::ofstream(recipe_path, std::ios::trunc) << recipe.resolved_toml;
  return fmt::format(
      "{} ({}) -> {}: {} parameter tensors; continue with: sigma train {} --set "
      "data.sources=[...] --resume auto (or --resume {} from a recipe of your own)",
      hf_dir, hf_architecture_name(imported.arch), dir, params.list().size(), recipe_path,
      recipe.checkpoint.dir);
}

}  // namespace sigma
