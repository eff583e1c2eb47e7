// sigma convert CKPT --to hf OUT [--dtype fp32|bf16] [--shard-size MB]
// sigma convert HF_DIR --from hf OUT_RUN
#include "app/commands.h"
#include "convert/hf.h"
#include "core/error.h"

#include <fmt/format.h>

#include <memory>

namespace sigma::app {

namespace {
struct ConvertArgs {
  std::string source, out, to, from, dtype = "fp32";
  double shard_mb = 2048;
};
}  // namespace

void add_convert_command(CLI::App& app) {
  auto args = std::make_shared<ConvertArgs>();
  CLI::App* cmd = app.add_subcommand(
      "convert",
      "Export a checkpoint as a Hugging Face model (--to hf), or import one (--from hf)");
  cmd->add_option("source", args->source,
                  "A checkpoint or run directory (--to), a HF model directory (--from)")
      ->required();
  cmd->add_option("out", args->out, "The HF directory to write (--to), the run directory (--from)")
      ->required();
  cmd->add_option("--to", args->to, "Export format")->check(CLI::IsMember({"hf"}));
  cmd->add_option("--from", args->from, "Import format")->check(CLI::IsMember({"hf"}));
  cmd->add_option("--dtype", args->dtype, "Exported weights: fp32 (default) or bf16")
      ->check(CLI::IsMember({"fp32", "bf16"}));
  cmd->add_option("--shard-size", args->shard_mb, "Largest safetensors shard, MB (default 2048)")
      ->check(CLI::PositiveNumber);
  cmd->callback([args] {
    if (args->to.empty() == args->from.empty())
      fail("convert: give exactly one of --to hf (export) and --from hf (import)");
    if (!args->to.empty()) {
      HfExportOptions options;
      options.dtype = args->dtype == "bf16" ? HfDType::kBF16 : HfDType::kF32;
      options.max_shard_bytes = int64_t(args->shard_mb * 1e6);
      fmt::print("sigma convert: {}\n", export_hf(args->source, args->out, options));
    } else {
      fmt::print("sigma convert: {}\n", import_hf(args->source, args->out));
    }
  });
}

}  // namespace sigma::app
