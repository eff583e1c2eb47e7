// sigma data prepare INPUT... --tokenizer byte --out PREFIX [--jsonl-field text]
// Builds one Megatron indexed dataset (PREFIX.bin + PREFIX.idx) and prints its statistics.
// Leaves out: `data train-tokenizer`, which arrives with the BPE tokenizer.
#include "app/commands.h"
#include "core/data/prepare.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <memory>

namespace sigma::app {

namespace {

std::string human_count(double n) {
  if (n >= 1e9) return fmt::format("{:.2f}G", n / 1e9);
  if (n >= 1e6) return fmt::format("{:.2f}M", n / 1e6);
  if (n >= 1e3) return fmt::format("{:.1f}k", n / 1e3);
  return fmt::format("{:.0f}", n);
}

void print_stats(const PrepareOptions& options, const PrepareStats& stats) {
  std::error_code ec;
  auto bin_bytes = std::filesystem::file_size(options.out_prefix + ".bin", ec);
  fmt::print("dataset    {}.bin + .idx ({:.2f} MB)\n", options.out_prefix,
             ec ? 0.0 : double(bin_bytes) / 1e6);
  fmt::print("documents  {}\n", stats.documents);
  fmt::print("tokens     {} ({} tokenizer)\n", stats.tokens, options.tokenizer);
  fmt::print("text       {:.2f} MB\n", double(stats.text_bytes) / 1e6);
  fmt::print("time       {:.2f} s ({} tokens/s)\n", stats.seconds,
             human_count(double(stats.tokens) / std::max(stats.seconds, 1e-9)));
  if (stats.skipped_files > 0)
    fmt::print("skipped    {} binary or unreadable file(s)\n", stats.skipped_files);
}

}  // namespace

void add_data_command(CLI::App& app) {
  auto options = std::make_shared<PrepareOptions>();
  CLI::App* data = app.add_subcommand("data", "Prepare token datasets");
  data->require_subcommand(1);
  CLI::App* prepare = data->add_subcommand(
      "prepare", "Tokenize text files, directories and JSONL into a Megatron indexed dataset");
  prepare->add_option("inputs", options->inputs,
                      "Files or directories (walked recursively); *.gz is decompressed, "
                      "*.jsonl holds one document per line")
      ->required();
  prepare->add_option("--tokenizer", options->tokenizer, "Tokenizer: byte")
      ->capture_default_str();
  prepare->add_option("--out", options->out_prefix, "Output prefix: writes PREFIX.bin, PREFIX.idx")
      ->required();
  prepare->add_option("--jsonl-field", options->jsonl_field,
                      "The JSONL field that holds a document's text")
      ->capture_default_str();
  prepare->callback([options] { print_stats(*options, prepare_dataset(*options)); });
}

}  // namespace sigma::app
