// sigma data prepare INPUT... --out PREFIX [--tokenizer byte|FILE] [--jsonl-field F] [--threads N]
// sigma data train-tokenizer INPUT... --vocab-size N --out tokenizer.json [...]
// sigma data random --out PREFIX --vocab-size N --tokens N   (benchmark data)
// Builds a Megatron indexed dataset (PREFIX.bin + PREFIX.idx), or learns a byte-level BPE
// tokenizer.json; draws prepare's progress on stderr and prints the final statistics.
// Leaves out: the work itself (core/data/prepare.h, core/data/bpe_trainer.h).
#include "app/commands.h"
#include "core/data/bpe_trainer.h"
#include "core/data/indexed_dataset.h"
#include "core/data/prepare.h"
#include "core/random.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
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

std::string progress_text(const PrepareProgress& p) {
  double mb = double(p.bytes_read) / 1e6;
  return fmt::format("{:.1f} MB read, {} docs, {} tokens, {:.1f} MB/s, {:.0f} s", mb,
                     human_count(double(p.documents)), human_count(double(p.tokens)),
                     mb / std::max(p.seconds, 1e-9), p.seconds);
}

// On a terminal the line is redrawn in place; in a log, one line every 30 s is enough.
void install_progress(PrepareOptions& options) {
  if (::isatty(STDERR_FILENO)) {
    options.progress_interval_s = 0.25;
    options.on_progress = [](const PrepareProgress& p) {
      fmt::print(stderr, "\r\033[K{}{}", progress_text(p), p.done ? "\n" : "");
      std::fflush(stderr);
    };
  } else {
    options.progress_interval_s = 30;
    options.on_progress = [](const PrepareProgress& p) {
      if (!p.done) fmt::print(stderr, "prepare: {}\n", progress_text(p));
    };
  }
}

void print_stats(const PrepareOptions& options, const PrepareStats& stats) {
  std::error_code ec;
  auto bin_bytes = std::filesystem::file_size(options.out_prefix + ".bin", ec);
  fmt::print("dataset    {}.bin + .idx ({:.2f} MB)\n", options.out_prefix,
             ec ? 0.0 : double(bin_bytes) / 1e6);
  fmt::print("documents  {}\n", stats.documents);
  fmt::print("tokens     {} ({} tokenizer)\n", stats.tokens, options.tokenizer);
  fmt::print("text       {:.2f} MB ({:.2f} bytes/token)\n", double(stats.text_bytes) / 1e6,
             double(stats.text_bytes) / double(std::max<int64_t>(stats.tokens, 1)));
  fmt::print("time       {:.2f} s ({} tokens/s, {:.1f} MB/s, {} threads)\n", stats.seconds,
             human_count(double(stats.tokens) / std::max(stats.seconds, 1e-9)),
             double(stats.text_bytes) / 1e6 / std::max(stats.seconds, 1e-9), stats.threads);
  if (stats.skipped_files > 0)
    fmt::print("skipped    {} binary or unreadable file(s)\n", stats.skipped_files);
}

void add_prepare(CLI::App& data) {
  auto options = std::make_shared<PrepareOptions>();
  CLI::App* prepare = data.add_subcommand(
      "prepare", "Tokenize text files, directories and JSONL into a Megatron indexed dataset");
  prepare->add_option("inputs", options->inputs,
                      "Files or directories (walked recursively); *.gz is decompressed, "
                      "*.jsonl holds one document per line")
      ->required();
  prepare->add_option("--tokenizer", options->tokenizer,
                      "\"byte\", or a Hugging Face tokenizer.json (byte-level BPE)")
      ->capture_default_str();
  prepare->add_option("--out", options->out_prefix, "Output prefix: writes PREFIX.bin, PREFIX.idx")
      ->required();
  prepare->add_option("--jsonl-field", options->jsonl_field,
                      "The JSONL field that holds a document's text")
      ->capture_default_str();
  prepare->add_option("--threads", options->num_threads,
                      "Tokenizing threads (0: one per hardware thread); the output is the same "
                      "for any count")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  prepare->callback([options] {
    install_progress(*options);
    print_stats(*options, prepare_dataset(*options));
  });
}

void add_train_tokenizer(CLI::App& data) {
  auto options = std::make_shared<BpeTrainOptions>();
  auto specials = std::make_shared<std::vector<std::string>>();
  CLI::App* train = data.add_subcommand(
      "train-tokenizer",
      "Learn a byte-level BPE from text and write a Hugging Face tokenizer.json");
  train->add_option("inputs", options->inputs, "Text files or directories (walked recursively)")
      ->required();
  train->add_option("--vocab-size", options->vocab_size,
                    "Special tokens + 256 bytes + merges")
      ->required();
  train->add_option("--out", options->out_path, "The tokenizer.json to write")->required();
  train->add_option("--min-frequency", options->min_frequency,
                    "A pair seen fewer times is never merged")
      ->capture_default_str();
  train->add_option("--special-token", *specials,
                    "A special token, ids 0.. in the order given (default: <|endoftext|>)");
  train->add_option("--bos-token", options->bos_token,
                    "A special token the post-processor puts before every sequence");
  train->add_option("--pattern", options->pattern,
                    "Pre-tokenizer regex (default: GPT-2's); e.g. Llama-3's");
  train->add_option("--threads", options->num_threads,
                    "Counting threads (0: one per hardware thread)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  train->callback([options, specials] {
    if (!specials->empty()) options->special_tokens = *specials;
    BpeTrainStats stats = train_bpe(*options);
    fmt::print("tokenizer  {} (vocabulary {}, {} merges)\n", options->out_path, stats.vocab_size,
               stats.merges);
    fmt::print("corpus     {} files, {:.2f} MB, {} distinct pre-tokens\n", stats.files,
               double(stats.bytes) / 1e6, stats.distinct_pre_tokens);
    fmt::print("time       {:.2f} s\n", stats.seconds);
  });
}

// Uniformly random tokens: data for benchmarks and smoke tests at any vocabulary size,
// where what is learned does not matter (the PyTorch peer trains on random tokens too).
void add_random(CLI::App& data) {
  struct Options {
    std::string out;
    int64_t vocab_size = 0, tokens = 0, document_tokens = 4097;
    uint64_t seed = 0;
  };
  auto options = std::make_shared<Options>();
  CLI::App* random = data.add_subcommand(
      "random", "Write a dataset of uniformly random tokens (for benchmarks and smoke tests)");
  random->add_option("--out", options->out, "Output prefix (PREFIX.bin, PREFIX.idx)")->required();
  random->add_option("--vocab-size", options->vocab_size, "Token ids are drawn from [0, N)")
      ->required()
      ->check(CLI::Range(int64_t(1), int64_t(1) << 31));
  random->add_option("--tokens", options->tokens, "Total tokens")
      ->required()
      ->check(CLI::PositiveNumber);
  random->add_option("--document-tokens", options->document_tokens, "Tokens per document")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  random->add_option("--seed", options->seed, "Random seed")->capture_default_str();
  random->callback([options] {
    IndexedDatasetWriter writer(options->out, options->vocab_size);
    Rng rng(options->seed);
    std::vector<int32_t> document;
    for (int64_t done = 0; done < options->tokens; done += int64_t(document.size())) {
      document.resize(size_t(std::min(options->document_tokens, options->tokens - done)));
      for (int32_t& token : document) token = int32_t(rng.below(uint64_t(options->vocab_size)));
      writer.add_document(document);
    }
    writer.finish();
    fmt::print("dataset  {} ({} tokens in {} documents, vocabulary {})\n", options->out,
               writer.num_tokens(), writer.num_documents(), options->vocab_size);
  });
}

}  // namespace

void add_data_command(CLI::App& app) {
  CLI::App* data = app.add_subcommand("data", "Prepare token datasets and tokenizers");
  data->require_subcommand(1);
  add_prepare(*data);
  add_train_tokenizer(*data);
  add_random(*data);
}

}  // namespace sigma::app
