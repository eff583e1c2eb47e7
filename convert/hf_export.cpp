// sigma convert CKPT --to hf OUT: see convert/hf.h and convert/README.md.
#include "convert/hf.h"

#include "convert/hf_config.h"
#include "convert/hf_tokenizer.h"
#include "convert/python_sources.h"
#include "convert/safetensors.h"
#include "infer/trained_model.h"

#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <regex>

namespace sigma {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
  if (!out) fail("cannot write {}", path.string());
}

// Qwen3-MoE checkpoints name each expert's matrices (model.layers.L.mlp.experts.E.gate_proj.weight,
// [F, D]); sigma stacks them ([E, F, D]). Other tensors keep their names.
void add_tensor(std::vector<safetensors::TensorToWrite>& out, const std::string& name,
                const Shape& shape, const float* data, bool split_experts) {
  static const std::regex stacked(R"((.*\.mlp\.experts)\.(gate_proj|up_proj|down_proj)\.weight)");
  std::smatch m;
  if (split_experts && std::regex_match(name, m, stacked)) {
    int64_t rows = shape[1], cols = shape[2];
    for (int64_t e = 0; e < shape[0]; ++e)
      out.push_back({fmt::format("{}.{}.{}.weight", m[1].str(), e, m[2].str()),
                     {rows, cols},
                     data + e * rows * cols});
    return;
  }
  std::vector<int64_t> dims(shape.dims.begin(), shape.dims.begin() + shape.rank);
  out.push_back({name, dims, data});
}

}  // namespace

std::string export_hf(const std::string& checkpoint, const std::string& out_dir,
                      const HfExportOptions& options) {
  TrainedModel model(checkpoint);
  const ModelConfig& config = model.config();
  const std::vector<int64_t>& top_k = config.moe.phase_top_k(model.moe_phase());
  std::string why_custom;
  HfArchitecture arch = choose_hf_architecture(config, top_k, &why_custom);
  fs::create_directories(out_dir);
  for (const fs::directory_entry& entry : fs::directory_iterator(out_dir))
    if (entry.path().extension() == ".safetensors" ||
        entry.path().filename() == "model.safetensors.index.json")
      fs::remove(entry.path());  // a previous export's shards would mix with these

  std::vector<safetensors::TensorToWrite> tensors;
  bool split = arch == HfArchitecture::kQwen3Moe;
  for (const ParamInfo& p : model.params().list())
    add_tensor(tensors, p.name, p.shape, p.param.value.f32(), split);
  // The expert bias is a buffer of SigmaForCausalLM (Qwen3-MoE has none: never chosen then).
  for (const auto& [name, tensor] : model.state_tensors())
    add_tensor(tensors, name, tensor.shape, tensor.f32(), false);
  auto dtype =
      options.dtype == HfDType::kF32 ? safetensors::DType::kF32 : safetensors::DType::kBF16;
  int64_t bytes = safetensors::write_sharded(out_dir, tensors, dtype, options.max_shard_bytes);

  HfTokenizerFiles tok = write_hf_tokenizer(model.tokenizer_spec(), model.tokenizer(), out_dir,
                                            model.recipe().data.seq_len);
  HfConfigExtras extras;
  extras.max_positions = model.recipe().data.seq_len;
  extras.eos_id = model.tokenizer().eos_id();
  extras.dtype = options.dtype == HfDType::kF32 ? "float32" : "bfloat16";
  write_text(fs::path(out_dir) / "config.json",
             hf_config_json(config, arch, top_k, extras).dump(2) + "\n");
  json generation = {{"eos_token_id", extras.eos_id}, {"do_sample", false}};
  write_text(fs::path(out_dir) / "generation_config.json", generation.dump(2) + "\n");
  if (arch == HfArchitecture::kSigma) {
    write_text(fs::path(out_dir) / "configuration_sigma.py", kConfigurationSigmaPy);
    write_text(fs::path(out_dir) / "modeling_sigma.py", kModelingSigmaPy);
  }
  bool sharded = fs::exists(fs::path(out_dir) / "model.safetensors.index.json");
  return fmt::format(
      "{} (step {}) -> {}: {}{}, {} tensors, {:.2f} MB {}{}; tokenizer: {}", model.checkpoint_dir(),
      model.step(), out_dir, hf_architecture_name(arch),
      why_custom.empty() ? "" : fmt::format(" ({}; load with trust_remote_code=True)", why_custom),
      tensors.size(), double(bytes) / 1e6, extras.dtype, sharded ? ", sharded" : "", tok.summary);
}

}  // namespace sigma
