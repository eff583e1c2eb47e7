// `sigma convert`: a committed checkpoint to a Hugging Face model directory, and back.
//
// Export writes sharded safetensors (convert/safetensors.h) with their index, config.json
// (convert/hf_config.h picks the architecture), generation_config.json, the tokenizer files,
// and for SigmaForCausalLM our configuration_sigma.py and modeling_sigma.py.
// Import reads the architectures export writes (and the same ones from elsewhere) into a run
// directory: recipe.toml plus a committed step-0 checkpoint that `sigma train --resume` continues.
// convert/README.md lists the files and the name mapping.
#pragma once

#include <cstdint>
#include <string>

namespace sigma {

enum class HfDType { kF32, kBF16 };

struct HfExportOptions {
  HfDType dtype = HfDType::kF32;
  int64_t max_shard_bytes = int64_t(2) << 30;
};

// Returns a one-line summary (architecture, tensors, bytes, shards).
std::string export_hf(const std::string& checkpoint, const std::string& out_dir,
                      const HfExportOptions& options);

// Writes OUT_RUN/recipe.toml, OUT_RUN/tokenizer.json (when the model has one) and
// OUT_RUN/checkpoints/step_00000000/. Returns a one-line summary.
std::string import_hf(const std::string& hf_dir, const std::string& out_run);

}  // namespace sigma
