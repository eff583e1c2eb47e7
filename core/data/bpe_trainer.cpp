// Byte-level BPE training (see bpe_trainer.h): pre-token counting over memory-mapped files
// on all threads, the merge loop with a lazily updated priority queue, and tokenizer.json.
#include "core/data/bpe_trainer.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <queue>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "core/data/byte_unicode.h"
#include "core/data/pretokenizer.h"
#include "core/error.h"

namespace sigma {

namespace {

using OrderedJson = nlohmann::ordered_json;

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using WordCounts = std::unordered_map<std::string, int64_t, StringHash, std::equal_to<>>;

constexpr size_t kChunkBytes = 4 << 20;  // counting work unit; cut after a newline

// A read-only memory map of one input file (nothing mapped for an empty file).
class MappedFile {
 public:
  explicit MappedFile(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY);
    if (fd < 0) fail("cannot open {}", path);
    struct stat info {};
    if (::fstat(fd, &info) != 0) {
      ::close(fd);
      fail("cannot read {}", path);
    }
    size_ = static_cast<size_t>(info.st_size);
    if (size_ > 0) {
      data_ = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (data_ == MAP_FAILED) {
        ::close(fd);
        fail("cannot read {}", path);
      }
    }
    ::close(fd);
  }
  ~MappedFile() {
    if (size_ > 0) ::munmap(data_, size_);
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  std::string_view text() const { return {static_cast<const char*>(data_), size_}; }

 private:
  void* data_ = nullptr;
  size_t size_ = 0;
};

std::vector<std::string> list_files(const std::vector<std::string>& inputs) {
  namespace fs = std::filesystem;
  std::vector<std::string> files;
  for (const std::string& input : inputs) {
    std::error_code error;
    if (fs::is_directory(input, error)) {
      std::vector<std::string> found;
      for (const auto& entry : fs::recursive_directory_iterator(input, error))
        if (entry.is_regular_file()) found.push_back(entry.path().string());
      std::sort(found.begin(), found.end());
      files.insert(files.end(), found.begin(), found.end());
    } else if (fs::is_regular_file(input, error)) {
      files.push_back(input);
    } else {
      fail("input {} is neither a file nor a directory", input);
    }
  }
  if (files.empty()) fail("no input files to train the tokenizer on");
  return files;
}

// Counts the pre-tokens of `text`, skipping the special tokens in it (leftmost, longest).
void count_text(std::string_view text, const PreTokenizer& pre_tokenizer,
                const std::vector<std::string>& specials, WordCounts& counts) {
  thread_local std::vector<PreToken> pieces;
  thread_local std::string spaced;
  auto count_plain = [&](std::string_view plain) {
    pre_tokenizer.split(plain, pieces);
    for (const PreToken& piece : pieces) {
      std::string_view bytes = plain.substr(piece.begin, piece.end - piece.begin);
      if (piece.space_prefix) {
        spaced.assign(1, ' ');
        spaced.append(bytes);
        bytes = spaced;
      }
      auto it = counts.find(bytes);
      if (it != counts.end()) ++it->second;
      else counts.emplace(std::string(bytes), 1);
    }
  };
  std::vector<size_t> next_at(specials.size());
  for (size_t i = 0; i < specials.size(); ++i) next_at[i] = text.find(specials[i]);
  size_t pos = 0;
  for (;;) {
    size_t best = std::string_view::npos;
    size_t best_length = 0;
    for (size_t i = 0; i < specials.size(); ++i) {
      if (next_at[i] < pos) next_at[i] = text.find(specials[i], pos);
      if (next_at[i] < best || (next_at[i] == best && specials[i].size() > best_length)) {
        best = next_at[i];
        best_length = specials[i].size();
      }
    }
    if (best == std::string_view::npos) break;
    count_plain(text.substr(pos, best - pos));
    pos = best + best_length;
  }
  count_plain(text.substr(pos));
}

WordCounts count_words(const std::vector<std::string>& files, const PreTokenizer& pre_tokenizer,
                       const std::vector<std::string>& specials, int num_threads,
                       BpeTrainStats& stats) {
  std::vector<std::unique_ptr<MappedFile>> maps;
  std::vector<std::string_view> chunks;
  for (const std::string& file : files) {
    maps.push_back(std::make_unique<MappedFile>(file));
    std::string_view text = maps.back()->text();
    stats.bytes += static_cast<int64_t>(text.size());
    while (!text.empty()) {
      size_t cut = text.size();
      size_t newline = text.size() > kChunkBytes ? text.find('\n', kChunkBytes) : text.npos;
      if (newline != text.npos) cut = newline + 1;
      chunks.push_back(text.substr(0, cut));
      text.remove_prefix(cut);
    }
  }
  size_t threads = num_threads > 0 ? static_cast<size_t>(num_threads)
                                   : std::max(1u, std::thread::hardware_concurrency());
  threads = std::max<size_t>(1, std::min(threads, chunks.size()));
  std::vector<WordCounts> partial(threads);
  std::atomic<size_t> next{0};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto work = [&](size_t t) {
    try {
      for (size_t i; (i = next.fetch_add(1)) < chunks.size();)
        count_text(chunks[i], pre_tokenizer, specials, partial[t]);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
      next = chunks.size();
    }
  };
  std::vector<std::thread> pool;
  for (size_t t = 1; t < threads; ++t) pool.emplace_back(work, t);
  work(0);
  for (std::thread& thread : pool) thread.join();
  if (error) std::rethrow_exception(error);
  WordCounts counts = std::move(partial[0]);
  for (size_t t = 1; t < threads; ++t)
    for (auto& [word, count] : partial[t]) counts[word] += count;
  stats.files = static_cast<int64_t>(files.size());
  stats.distinct_pre_tokens = static_cast<int64_t>(counts.size());
  return counts;
}

uint64_t pack(int32_t left, int32_t right) {
  return (uint64_t{static_cast<uint32_t>(left)} << 32) | static_cast<uint32_t>(right);
}

struct Candidate {
  int64_t count;
  uint64_t pair;
  // The queue's top is the most frequent pair; among equals, the smaller (left, right) ids.
  bool operator<(const Candidate& o) const {
    return count != o.count ? count < o.count : pair > o.pair;
  }
};

struct Word {
  std::vector<int32_t> symbols;
  int64_t count;
};

struct Vocabulary {
  std::vector<std::string> spelling;  // by id, as tokenizer.json writes it
  std::vector<std::string> bytes;     // by id
  std::unordered_map<std::string, int32_t> ids;  // by spelling
  std::vector<std::pair<int32_t, int32_t>> merges;

  // Hugging Face reuses the id of a spelling already present (two merges can spell the same
  // token), so the vocabulary grows by one token per merge at most.
  int32_t add(const std::string& token_spelling, const std::string& token_bytes) {
    auto [it, inserted] = ids.emplace(token_spelling, static_cast<int32_t>(spelling.size()));
    if (inserted) {
      spelling.push_back(token_spelling);
      bytes.push_back(token_bytes);
    }
    return it->second;
  }
};

void learn_merges(const WordCounts& counts, const BpeTrainOptions& options, Vocabulary& vocab) {
  std::array<int32_t, 256> byte_ids{};
  for (int b = 0; b < 256; ++b) {
    std::string spelling;
    append_utf8(spelling, byte_to_code_point(static_cast<uint8_t>(b)));
    byte_ids[b] = vocab.ids.at(spelling);
  }
  std::vector<Word> words;
  words.reserve(counts.size());
  for (const auto& [text, count] : counts) {
    Word word{{}, count};
    for (char c : text) word.symbols.push_back(byte_ids[static_cast<uint8_t>(c)]);
    words.push_back(std::move(word));
  }
  std::unordered_map<uint64_t, int64_t> pair_counts;
  std::unordered_map<uint64_t, std::vector<int32_t>> where;  // pair -> words that had it
  for (size_t w = 0; w < words.size(); ++w) {
    const std::vector<int32_t>& s = words[w].symbols;
    for (size_t i = 0; i + 1 < s.size(); ++i) {
      uint64_t pair = pack(s[i], s[i + 1]);
      pair_counts[pair] += words[w].count;
      where[pair].push_back(static_cast<int32_t>(w));
    }
  }
  // Every change of a pair's count pushes a fresh entry, so an entry whose count differs
  // from the current one is stale and dropped.
  std::priority_queue<Candidate> queue;
  for (const auto& [pair, count] : pair_counts) queue.push({count, pair});

  std::unordered_map<uint64_t, int64_t> delta;
  while (static_cast<int64_t>(vocab.spelling.size()) < options.vocab_size && !queue.empty()) {
    Candidate top = queue.top();
    queue.pop();
    auto current = pair_counts.find(top.pair);
    if (current == pair_counts.end() || current->second != top.count) continue;
    if (top.count < options.min_frequency) break;
    auto left = static_cast<int32_t>(top.pair >> 32);
    auto right = static_cast<int32_t>(top.pair & 0xFFFFFFFFu);
    std::string merged_bytes = vocab.bytes[left] + vocab.bytes[right];
    int32_t merged = vocab.add(vocab.spelling[left] + vocab.spelling[right], merged_bytes);
    vocab.merges.emplace_back(left, right);

    std::vector<int32_t> affected = std::move(where[top.pair]);
    where.erase(top.pair);
    std::sort(affected.begin(), affected.end());
    affected.erase(std::unique(affected.begin(), affected.end()), affected.end());
    delta.clear();
    for (int32_t w : affected) {
      std::vector<int32_t>& s = words[w].symbols;
      int64_t count = words[w].count;
      for (size_t i = 0; i + 1 < s.size(); ++i) delta[pack(s[i], s[i + 1])] -= count;
      size_t out = 0;
      for (size_t i = 0; i < s.size(); ++out) {
        if (i + 1 < s.size() && s[i] == left && s[i + 1] == right) {
          s[out] = merged;
          i += 2;
        } else {
          s[out] = s[i++];
        }
      }
      s.resize(out);
      for (size_t i = 0; i + 1 < s.size(); ++i) {
        uint64_t pair = pack(s[i], s[i + 1]);
        delta[pair] += count;
        if (s[i] == merged || s[i + 1] == merged) where[pair].push_back(w);
      }
    }
    for (const auto& [pair, change] : delta) {
      if (change == 0) continue;
      int64_t& count = pair_counts[pair];
      count += change;
      if (count > 0) queue.push({count, pair});
      else pair_counts.erase(pair);
    }
  }
}

OrderedJson byte_level_json(bool add_prefix_space, bool trim_offsets) {
  return {{"type", "ByteLevel"}, {"add_prefix_space", add_prefix_space},
          {"trim_offsets", trim_offsets}, {"use_regex", true}};
}

OrderedJson tokenizer_json(const Vocabulary& vocab, const BpeTrainOptions& options,
                           const PreTokenizer& pre_tokenizer) {
  OrderedJson added = OrderedJson::array();
  for (size_t i = 0; i < options.special_tokens.size(); ++i)
    added.push_back({{"id", i}, {"content", options.special_tokens[i]}, {"single_word", false},
                     {"lstrip", false}, {"rstrip", false}, {"normalized", false},
                     {"special", true}});
  // What Hugging Face writes for processors.ByteLevel(trim_offsets=False), and for a
  // Llama-3-style BOS template after it.
  OrderedJson post = byte_level_json(true, false);
  if (!options.bos_token.empty()) {
    int32_t bos = vocab.ids.at(options.bos_token);
    auto special = [&](int type_id) {
      return OrderedJson{{"SpecialToken", {{"id", options.bos_token}, {"type_id", type_id}}}};
    };
    auto sequence = [](const char* id, int type_id) {
      return OrderedJson{{"Sequence", {{"id", id}, {"type_id", type_id}}}};
    };
    OrderedJson special_tokens;
    special_tokens[options.bos_token] = {{"id", options.bos_token}, {"ids", {bos}},
                                         {"tokens", {options.bos_token}}};
    OrderedJson templ = {
        {"type", "TemplateProcessing"},
        {"single", {special(0), sequence("A", 0)}},
        {"pair", {special(0), sequence("A", 0), special(0), sequence("B", 1)}},
        {"special_tokens", special_tokens}};
    post = {{"type", "Sequence"}, {"processors", {post, templ}}};
  }
  OrderedJson model_vocab = OrderedJson::object();
  for (size_t id = 0; id < vocab.spelling.size(); ++id) model_vocab[vocab.spelling[id]] = id;
  OrderedJson merges = OrderedJson::array();
  for (const auto& [left, right] : vocab.merges)
    merges.push_back({vocab.spelling[left], vocab.spelling[right]});
  OrderedJson model = {{"type", "BPE"},
                       {"dropout", nullptr},
                       {"unk_token", nullptr},
                       {"continuing_subword_prefix", nullptr},
                       {"end_of_word_suffix", nullptr},
                       {"fuse_unk", false},
                       {"byte_fallback", false},
                       {"ignore_merges", false},
                       {"vocab", std::move(model_vocab)},
                       {"merges", std::move(merges)}};
  return {{"version", "1.0"},
          {"truncation", nullptr},
          {"padding", nullptr},
          {"added_tokens", std::move(added)},
          {"normalizer", nullptr},
          {"pre_tokenizer", pre_tokenizer.to_json()},
          {"post_processor", std::move(post)},
          {"decoder", byte_level_json(true, true)},
          {"model", std::move(model)}};
}

bool valid_utf8(std::string_view text) {
  for (size_t pos = 0; pos < text.size();)
    if (!next_code_point(text, pos)) return false;
  return true;
}

void check_options(const BpeTrainOptions& options) {
  if (options.out_path.empty()) fail("train-tokenizer needs an output path (--out)");
  std::unordered_set<std::string> seen;
  for (const std::string& token : options.special_tokens) {
    if (token.empty() || !valid_utf8(token))
      fail("special token \"{}\" must be non-empty UTF-8 text", token);
    if (!seen.insert(token).second) fail("special token \"{}\" is given twice", token);
  }
  int64_t minimum = static_cast<int64_t>(options.special_tokens.size()) + 256;
  if (options.vocab_size < minimum || options.vocab_size > INT32_MAX)
    fail("--vocab-size {} must be at least {} (256 bytes + {} special tokens)",
         options.vocab_size, minimum, options.special_tokens.size());
  if (options.min_frequency < 1)
    fail("--min-frequency {} must be at least 1", options.min_frequency);
  if (!options.bos_token.empty() && !seen.count(options.bos_token))
    fail("--bos-token \"{}\" is not one of the special tokens", options.bos_token);
}

}  // namespace

BpeTrainStats train_bpe(const BpeTrainOptions& options) {
  auto start = std::chrono::steady_clock::now();
  check_options(options);
  PreTokenizer pre_tokenizer = PreTokenizer::byte_level(false);
  if (!options.pattern.empty()) {
    try {
      pre_tokenizer = PreTokenizer::split_then_byte_level(options.pattern);
    } catch (const UserError& e) {
      fail("--pattern: {}", e.what());
    }
  }
  BpeTrainStats stats;
  WordCounts counts = count_words(list_files(options.inputs), pre_tokenizer,
                                  options.special_tokens, options.num_threads, stats);

  // Ids: the special tokens, then the 256 byte symbols in code point order (Hugging Face's
  // order for its byte-level alphabet), then one per merge.
  Vocabulary vocab;
  for (const std::string& token : options.special_tokens) vocab.add(token, token);
  std::vector<std::pair<char32_t, int>> alphabet;
  for (int b = 0; b < 256; ++b)
    alphabet.emplace_back(byte_to_code_point(static_cast<uint8_t>(b)), b);
  std::sort(alphabet.begin(), alphabet.end());
  for (const auto& [code_point, b] : alphabet) {
    std::string spelling;
    append_utf8(spelling, code_point);
    vocab.add(spelling, std::string(1, static_cast<char>(b)));
  }
  learn_merges(counts, options, vocab);

  OrderedJson json = tokenizer_json(vocab, options, pre_tokenizer);
  std::ofstream out(options.out_path, std::ios::binary | std::ios::trunc);
  out << json.dump(2) << '\n';
  out.close();
  if (!out) fail("cannot write {}", options.out_path);

  stats.merges = static_cast<int64_t>(vocab.merges.size());
  stats.vocab_size = static_cast<int64_t>(vocab.spelling.size());
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return stats;
}

}  // namespace sigma
