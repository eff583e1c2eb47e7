// A test driver for sigma's BPE tokenizer, used by test/integration/tokenizer_parity.sh and
// scripts/bench-tokenizer to compare with Hugging Face `tokenizers` over pipes. Texts travel
// as hex so that invalid UTF-8 survives the trip.
//
//   tokenize_tool encode TOKENIZER [--no-special] [--threads N]
//       stdin: one hex text per line; stdout per line: ids (space-separated), TAB,
//       hex of decode(ids) skipping special tokens, TAB, hex of decode(ids) keeping them
//   tokenize_tool decode TOKENIZER
//       stdin: one line of space-separated ids each; stdout: the two hex decodings
//   tokenize_tool bench TOKENIZER FILE [--threads N] [--repeat R]
//       prints the encode throughput of FILE cut into documents of ~4 KiB (at newlines)
//
// Leaves out: training (that is `sigma data train-tokenizer`).
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "core/data/bpe_tokenizer.h"
#include "core/error.h"

namespace {

using sigma::AddSpecialTokens;
using sigma::BpeTokenizer;
using sigma::SkipSpecialTokens;

std::string to_hex(const std::string& bytes) {
  static const char kDigits[] = "0123456789abcdef";
  std::string hex;
  for (unsigned char c : bytes) {
    hex.push_back(kDigits[c >> 4]);
    hex.push_back(kDigits[c & 15]);
  }
  return hex;
}

std::string from_hex(const std::string& hex) {
  if (hex.size() % 2 != 0) sigma::fail("odd-length hex line");
  std::string bytes;
  for (size_t i = 0; i < hex.size(); i += 2)
    bytes.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return bytes;
}

void print_decodings(const BpeTokenizer& tokenizer, const std::vector<int32_t>& ids) {
  std::cout << to_hex(tokenizer.decode(ids, SkipSpecialTokens::kYes)) << '\t'
            << to_hex(tokenizer.decode(ids, SkipSpecialTokens::kNo)) << '\n';
}

int run(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.size() < 2) sigma::fail("usage: tokenize_tool encode|decode|bench TOKENIZER ...");
  const std::string mode = args[0];
  BpeTokenizer tokenizer(args[1]);
  AddSpecialTokens add = AddSpecialTokens::kYes;
  int threads = 1;
  int repeat = 3;
  std::vector<std::string> positional;
  for (size_t i = 2; i < args.size(); ++i) {
    if (args[i] == "--no-special") add = AddSpecialTokens::kNo;
    else if (args[i] == "--threads" && i + 1 < args.size()) threads = std::stoi(args[++i]);
    else if (args[i] == "--repeat" && i + 1 < args.size()) repeat = std::stoi(args[++i]);
    else positional.push_back(args[i]);
  }
  std::string line;
  if (mode == "encode") {
    std::vector<std::string> texts;
    while (std::getline(std::cin, line)) texts.push_back(from_hex(line));
    auto batch = tokenizer.encode_batch(texts, add, threads);
    for (const auto& ids : batch) {
      for (size_t i = 0; i < ids.size(); ++i) std::cout << (i ? " " : "") << ids[i];
      std::cout << '\t';
      print_decodings(tokenizer, ids);
    }
  } else if (mode == "decode") {
    while (std::getline(std::cin, line)) {
      std::istringstream fields(line);
      std::vector<int32_t> ids;
      for (int64_t id; fields >> id;) ids.push_back(static_cast<int32_t>(id));
      print_decodings(tokenizer, ids);
    }
  } else if (mode == "bench" && positional.size() == 1) {
    std::ifstream in(positional[0], std::ios::binary);
    if (!in) sigma::fail("cannot read {}", positional[0]);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::vector<std::string> documents;
    for (size_t pos = 0; pos < text.size();) {
      size_t cut = text.find('\n', std::min(pos + 4096, text.size()));
      cut = cut == std::string::npos ? text.size() : cut + 1;
      documents.push_back(text.substr(pos, cut - pos));
      pos = cut;
    }
    // The best of `repeat` runs, each with a fresh tokenizer so no run starts with a warm cache.
    double best = 1e30;
    size_t tokens = 0;
    for (int r = 0; r < repeat; ++r) {
      BpeTokenizer fresh(args[1]);
      auto start = std::chrono::steady_clock::now();
      auto batch = fresh.encode_batch(documents, AddSpecialTokens::kNo, threads);
      std::chrono::duration<double> seconds = std::chrono::steady_clock::now() - start;
      best = std::min(best, seconds.count());
      tokens = 0;
      for (const auto& ids : batch) tokens += ids.size();
    }
    std::printf("%.2f MB/s (%zu bytes, %zu tokens, %zu documents, %d threads, %.3f s)\n",
                text.size() / best / 1e6, text.size(), tokens, documents.size(), threads, best);
  } else {
    sigma::fail("unknown mode '{}' or wrong arguments (see test/tools/tokenize_tool.cpp)", mode);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const sigma::UserError& e) {
    std::fprintf(stderr, "tokenize_tool: %s\n", e.what());
    return 2;
  }
}
