#include "convert/hf_tokenizer.h"

#include "core/data/byte_unicode.h"
#include "core/error.h"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>

namespace sigma {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr char kEndOfText[] = "<|endoftext|>";

json byte_level() {
  return {{"type", "ByteLevel"},
          {"add_prefix_space", false},
          {"trim_offsets", true},
          {"use_regex", false}};
}

json byte_tokenizer_json() {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) {
    std::string spelling;
    append_utf8(spelling, byte_to_code_point(uint8_t(b)));
    vocab[spelling] = b;
  }
  json added = {{{"id", 256},
                 {"content", kEndOfText},
                 {"single_word", false},
                 {"lstrip", false},
                 {"rstrip", false},
                 {"normalized", false},
                 {"special", true}}};
  return {{"version", "1.0"},
          {"truncation", nullptr},
          {"padding", nullptr},
          {"added_tokens", added},
          {"normalizer", nullptr},
          {"pre_tokenizer", byte_level()},
          {"post_processor", nullptr},
          {"decoder", byte_level()},
          {"model",
           {{"type", "BPE"},
            {"dropout", nullptr},
            {"unk_token", nullptr},
            {"continuing_subword_prefix", nullptr},
            {"end_of_word_suffix", nullptr},
            {"fuse_unk", false},
            {"byte_fallback", false},
            {"ignore_merges", false},
            {"vocab", vocab},
            {"merges", json::array()}}}};
}

json read_json(const fs::path& path) {
  std::ifstream in(path);
  json j = json::parse(in, nullptr, false);
  if (j.is_discarded()) fail("{}: not valid JSON", path.string());
  return j;
}

// The spelling of added token `id` in a tokenizer.json, or "" when it is not an added token.
std::string added_token(const json& tokenizer, int64_t id) {
  if (tokenizer.contains("added_tokens"))
    for (const json& t : tokenizer["added_tokens"])
      if (t.value("id", int64_t(-1)) == id) return t.value("content", "");
  return "";
}

}  // namespace

HfTokenizerFiles write_hf_tokenizer(const std::string& spec, const Tokenizer& tokenizer,
                                    const std::string& out_dir, int64_t max_length) {
  fs::path out = fs::path(out_dir) / "tokenizer.json";
  json file;
  HfTokenizerFiles result;
  if (spec == "byte") {
    file = byte_tokenizer_json();
    std::ofstream(out, std::ios::trunc) << file.dump(2) << "\n";
    result.summary = "byte-level, written as an equivalent tokenizer.json";
  } else {
    fs::copy_file(spec, out, fs::copy_options::overwrite_existing);
    file = read_json(out);
    result.summary = "the run's " + spec;
  }
  json config = {{"tokenizer_class", "PreTrainedTokenizerFast"},
                 {"model_max_length", max_length},
                 {"clean_up_tokenization_spaces", false}};
  std::string eos = added_token(file, tokenizer.eos_id());
  if (!eos.empty()) config["eos_token"] = eos;
  std::ofstream(fs::path(out_dir) / "tokenizer_config.json", std::ios::trunc)
      << config.dump(2) << "\n";
  return result;
}

std::string import_hf_tokenizer(const std::string& hf_dir, const std::string& out_run) {
  fs::path in = fs::path(hf_dir) / "tokenizer.json";
  if (!fs::exists(in)) return "";
  if (read_json(in) == byte_tokenizer_json()) return "byte";
  fs::path copy = fs::absolute(fs::path(out_run) / "tokenizer.json");
  fs::copy_file(in, copy, fs::copy_options::overwrite_existing);
  return copy.string();
}

}  // namespace sigma
