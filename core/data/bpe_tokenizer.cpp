// Byte-level BPE from tokenizer.json (see bpe_tokenizer.h): loading and checking the file,
// merging by rank with a per-thread cache, post-processing, decoding, and the
// multi-threaded batch encoder. Added tokens and pre-tokenizers are in pretokenizer.cpp.
#include "core/data/bpe_tokenizer.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <exception>
#include <fstream>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "core/data/byte_unicode.h"
#include "core/error.h"

namespace sigma {

namespace {

using nlohmann::json;

// (left id, right id) -> (rank, merged id), open addressing: the merge loop's hot lookup.
class MergeTable {
 public:
  struct Merge {
    int32_t rank;
    int32_t merged;
  };

  void reserve(size_t count) {
    size_t capacity = 16;
    while (capacity < 2 * count) capacity *= 2;
    slots_.assign(capacity, Slot{kEmpty, {0, 0}});
    mask_ = capacity - 1;
  }

  // A pair listed twice keeps its last rank, as a map built from the list in order would.
  void insert(int32_t left, int32_t right, Merge merge) {
    uint64_t key = pack(left, right);
    size_t i = hash(key) & mask_;
    while (slots_[i].key != kEmpty && slots_[i].key != key) i = (i + 1) & mask_;
    slots_[i] = Slot{key, merge};
  }

  const Merge* find(int32_t left, int32_t right) const {
    uint64_t key = pack(left, right);
    for (size_t i = hash(key) & mask_;; i = (i + 1) & mask_) {
      if (slots_[i].key == key) return &slots_[i].merge;
      if (slots_[i].key == kEmpty) return nullptr;
    }
  }

 private:
  struct Slot {
    uint64_t key;
    Merge merge;
  };
  static constexpr uint64_t kEmpty = ~uint64_t{0};
  static uint64_t pack(int32_t left, int32_t right) {
    return (uint64_t{static_cast<uint32_t>(left)} << 32) | static_cast<uint32_t>(right);
  }
  static size_t hash(uint64_t key) {  // a 64-bit finaliser (MurmurHash3's fmix64)
    key ^= key >> 33;
    key *= 0xff51afd7ed558ccdULL;
    key ^= key >> 33;
    return static_cast<size_t>(key);
  }

  std::vector<Slot> slots_{Slot{kEmpty, {0, 0}}};
  size_t mask_ = 0;
};

struct HeapEntry {
  int32_t rank;
  int32_t pos;
  bool operator>(const HeapEntry& o) const {
    return rank != o.rank ? rank > o.rank : pos > o.pos;
  }
};

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

constexpr size_t kCacheEntries = 1 << 16;  // per thread; cleared when full
constexpr size_t kCacheMaxBytes = 64;      // longer pieces are rare and merged afresh
const char* const kEosNames[] = {"<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "<|eos|>"};

std::atomic<uint64_t> next_instance{1};

int32_t get_id(const json& value, const std::string& where) {
  if (!value.is_number_integer() || value.get<int64_t>() < 0 ||
      value.get<int64_t>() > INT32_MAX)
    fail("{} must be a non-negative 32-bit integer id, not {}", where, value.dump());
  return value.get<int32_t>();
}

}  // namespace

struct BpeTokenizer::State {
  std::string source;
  uint64_t instance = 0;  // tells thread-local caches which tokenizer they serve
  Normalizer normalizer;
  PreTokenizer pre_tokenizer;
  MergeTable merges;
  std::array<int32_t, 256> byte_ids{};  // the model's id of each byte's symbol, -1 if none
  std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>> model_ids_by_bytes;
  std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>> ids_by_spelling;
  bool ignore_merges = false;
  int32_t unk_id = -1;
  bool fuse_unk = false;

  std::vector<AddedToken> added;
  AddedTokenSplitter added_splitter;

  std::vector<int32_t> prefix_ids;  // the post-processor's tokens around one sequence
  std::vector<int32_t> suffix_ids;

  std::vector<std::string> spelling;  // by id: what the file calls the token
  std::vector<std::string> bytes;     // by id: what decode emits for it
  std::vector<uint8_t> present;
  std::vector<uint8_t> special;
  int32_t eos = -1;

  void load(const json& file);
  void load_model(const json& model, std::unordered_map<std::string, int32_t>& vocab);
  void load_added_tokens(const json& list);
  void load_post_processor(const json& value, const std::string& where);
};

struct BpeTokenizer::Scratch {
  uint64_t instance = 0;
  // Piece bytes -> (offset, count) of its ids in cache_ids.
  std::unordered_map<std::string, std::pair<uint32_t, uint32_t>, StringHash, std::equal_to<>>
      cache;
  std::vector<int32_t> cache_ids;
  std::vector<TextSegment> segments;
  std::vector<TextSegment> inner;  // a segment's pieces after its normalized added tokens
  std::string normalized;
  std::vector<PreToken> pieces;
  std::string spaced;
  std::vector<int32_t> symbols;
  std::vector<int32_t> prev;
  std::vector<int32_t> next;
  std::vector<HeapEntry> heap;
};

namespace {

// What a JSON value is, for error messages: its "type" when it has one.
std::string describe(const json& value) {
  if (value.is_object() && value.contains("type") && value["type"].is_string())
    return fmt::format("\"{}\"", value["type"].get<std::string>());
  std::string text = value.dump();
  return text.size() > 60 ? text.substr(0, 60) + "..." : text;
}

}  // namespace

void BpeTokenizer::State::load(const json& file) {
  if (!file.is_object()) fail("the top level is not a JSON object");
  static const json kNull;
  auto member = [&](const char* key) -> const json& {
    auto it = file.find(key);
    return it == file.end() ? kNull : *it;
  };
  normalizer = Normalizer::from_json(member("normalizer"));
  if (!member("model").is_object()) fail("\"model\" is missing or not an object");
  std::unordered_map<std::string, int32_t> vocab;
  load_model(member("model"), vocab);
  load_added_tokens(member("added_tokens"));
  pre_tokenizer = PreTokenizer::from_json(member("pre_tokenizer"));
  const json& decoder = member("decoder");
  if (!decoder.is_object() || decoder.value("type", json()) != "ByteLevel")
    fail("decoder is {}; byte-level BPE needs the ByteLevel decoder", describe(decoder));
  load_post_processor(member("post_processor"), "post_processor");

  int32_t max_id = -1;
  for (const auto& [text, id] : vocab) max_id = std::max(max_id, id);
  for (const AddedToken& token : added) max_id = std::max(max_id, token.id);
  size_t count = static_cast<size_t>(max_id + 1);
  spelling.assign(count, std::string());
  present.assign(count, 0);
  special.assign(count, 0);
  for (const auto& [text, id] : vocab) {
    spelling[id] = text;
    present[id] = 1;
    ids_by_spelling[text] = id;
  }
  // An added token's content wins over the model's spelling of the same id, in both ways.
  for (const AddedToken& token : added) {
    spelling[token.id] = token.content;
    present[token.id] = 1;
    special[token.id] = token.special;
    ids_by_spelling[token.content] = token.id;
  }
  // The ByteLevel decoder maps a token's characters back to bytes; a token with a character
  // outside the byte table (an added "hello world", say) is emitted as its own UTF-8.
  bytes.assign(count, std::string());
  for (size_t id = 0; id < count; ++id)
    if (present[id]) bytes[id] = vocab_string_to_bytes(spelling[id]).value_or(spelling[id]);
  // Hugging Face decodes a normalized added token from its normalized content: the NFC of
  // "cafe\u0301" is "caf\u00e9", whose \u00e9 the byte table reads as the lone byte 0xE9.
  for (const AddedToken& token : added) {
    std::string normal;
    if (token.normalized && normalizer.normalize(token.content, normal))
      bytes[token.id] = vocab_string_to_bytes(normal).value_or(normal);
  }
  for (const char* name : kEosNames) {
    for (const AddedToken& token : added)
      if (token.special && token.content == name && eos < 0) eos = token.id;
  }
}

void BpeTokenizer::State::load_model(const json& model,
                                     std::unordered_map<std::string, int32_t>& vocab) {
  if (model.contains("type") && model["type"] != "BPE")
    fail("model.type is {}; sigma reads BPE models only", model["type"].dump());
  if (model.contains("dropout") && !model["dropout"].is_null() && model["dropout"] != 0)
    fail("model.dropout = {} is not supported", model["dropout"].dump());
  if (read_flag(model, "byte_fallback", false, "model"))
    fail("model.byte_fallback = true is not supported (byte-level BPE needs no fallback)");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    auto it = model.find(key);
    if (it != model.end() && !it->is_null() && *it != "")
      fail("model.{} = {} is not supported by byte-level BPE", key, it->dump());
  }
  ignore_merges = read_flag(model, "ignore_merges", false, "model");
  fuse_unk = read_flag(model, "fuse_unk", false, "model");

  auto vocab_json = model.find("vocab");
  if (vocab_json == model.end() || !vocab_json->is_object())
    fail("model.vocab is missing or not an object");
  vocab.reserve(vocab_json->size());
  for (const auto& [text, id] : vocab_json->items())
    vocab[text] = get_id(id, fmt::format("model.vocab[\"{}\"]", text));
  auto id_of = [&](const std::string& text, size_t i) {
    auto it = vocab.find(text);
    if (it == vocab.end())
      fail("model.merges[{}] refers to \"{}\", which is not in model.vocab", i, text);
    return it->second;
  };

  auto merges_json = model.find("merges");
  if (merges_json == model.end() || !merges_json->is_array())
    fail("model.merges is missing or not a list");
  merges.reserve(merges_json->size());
  // Hugging Face writes a merge as ["a", "b"]; files from older versions as "a b".
  for (size_t i = 0; i < merges_json->size(); ++i) {
    const json& merge = (*merges_json)[i];
    std::string left;
    std::string right;
    if (merge.is_string()) {
      const std::string& text = merge.get_ref<const std::string&>();
      size_t space = text.find(' ');
      if (space == std::string::npos || text.find(' ', space + 1) != std::string::npos)
        fail("model.merges[{}] = {} is not two tokens separated by one space", i, merge.dump());
      left = text.substr(0, space);
      right = text.substr(space + 1);
    } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() &&
               merge[1].is_string()) {
      left = merge[0].get<std::string>();
      right = merge[1].get<std::string>();
    } else {
      fail("model.merges[{}] = {} is neither \"a b\" nor [\"a\", \"b\"]", i, merge.dump());
    }
    int32_t left_id = id_of(left, i);
    int32_t right_id = id_of(right, i);
    merges.insert(left_id, right_id, {static_cast<int32_t>(i), id_of(left + right, i)});
  }

  auto unk = model.find("unk_token");
  if (unk != model.end() && !unk->is_null()) {
    if (!unk->is_string()) fail("model.unk_token must be a string or null");
    auto it = vocab.find(unk->get<std::string>());
    if (it == vocab.end()) fail("model.unk_token {} is not in model.vocab", unk->dump());
    unk_id = it->second;
  }
  for (int b = 0; b < 256; ++b) {
    std::string symbol;
    append_utf8(symbol, byte_to_code_point(static_cast<uint8_t>(b)));
    auto it = vocab.find(symbol);
    byte_ids[b] = it == vocab.end() ? -1 : it->second;
  }
  if (ignore_merges) {
    for (const auto& [text, id] : vocab)
      if (auto raw = vocab_string_to_bytes(text)) model_ids_by_bytes.emplace(*raw, id);
  }
}

void BpeTokenizer::State::load_added_tokens(const json& list) {
  if (list.is_null()) return;
  if (!list.is_array()) fail("added_tokens must be a list");
  for (size_t i = 0; i < list.size(); ++i) {
    std::string where = fmt::format("added_tokens[{}]", i);
    const json& item = list[i];
    if (!item.is_object() || !item.contains("id") || !item.contains("content") ||
        !item["content"].is_string() || item["content"].get_ref<const std::string&>().empty())
      fail("{} must be an object with an \"id\" and a non-empty \"content\"", where);
    AddedToken token;
    token.id = get_id(item["id"], where + ".id");
    token.content = item["content"].get<std::string>();
    token.special = read_flag(item, "special", false, where);
    token.lstrip = read_flag(item, "lstrip", false, where);
    token.rstrip = read_flag(item, "rstrip", false, where);
    token.single_word = read_flag(item, "single_word", false, where);
    token.normalized = read_flag(item, "normalized", !token.special, where);
    added.push_back(std::move(token));
  }
  added_splitter = AddedTokenSplitter(added, normalizer);
}

void BpeTokenizer::State::load_post_processor(const json& value, const std::string& where) {
  if (value.is_null()) return;
  std::string type = value.is_object() ? value.value("type", std::string()) : std::string();
  if (type == "ByteLevel") return;  // it only trims offsets
  if (type == "Sequence") {
    // Each processor wraps what the ones before it produced.
    auto list = value.find("processors");
    if (list == value.end() || !list->is_array()) fail("{}.processors must be a list", where);
    for (size_t i = 0; i < list->size(); ++i)
      load_post_processor((*list)[i], fmt::format("{}.processors[{}]", where, i));
    return;
  }
  std::vector<int32_t> before;
  std::vector<int32_t> after;
  if (type == "TemplateProcessing") {
    auto single = value.find("single");
    auto specials = value.find("special_tokens");
    if (single == value.end() || !single->is_array() || specials == value.end() ||
        !specials->is_object())
      fail("{} needs a \"single\" list and a \"special_tokens\" object", where);
    bool seen_sequence = false;
    for (const json& item : *single) {
      if (item.contains("Sequence")) {
        if (seen_sequence || item["Sequence"].value("id", json()) != "A")
          fail("{}.single must hold the sequence $A once, not {}", where, item.dump());
        seen_sequence = true;
      } else if (item.contains("SpecialToken") && item["SpecialToken"].contains("id")) {
        const json& name = item["SpecialToken"]["id"];
        auto entry = name.is_string() ? specials->find(name.get<std::string>()) : specials->end();
        if (entry == specials->end() || !entry->contains("ids") || !(*entry)["ids"].is_array())
          fail("{}.special_tokens has no ids for {}", where, name.dump());
        for (const json& id : (*entry)["ids"])
          (seen_sequence ? after : before).push_back(get_id(id, where + ".special_tokens"));
      } else {
        fail("{}.single has an item that is neither Sequence nor SpecialToken: {}", where,
             item.dump());
      }
    }
    if (!seen_sequence) fail("{}.single does not hold the sequence $A", where);
  } else if (type == "RobertaProcessing" || type == "BertProcessing") {
    for (const char* key : {"cls", "sep"}) {
      auto it = value.find(key);
      if (it == value.end() || !it->is_array() || it->size() != 2)
        fail("{}.{} must be [token, id]", where, key);
      (std::string(key) == "cls" ? before : after)
          .push_back(get_id((*it)[1], fmt::format("{}.{}[1]", where, key)));
    }
  } else {
    fail("{} type {} is not supported (TemplateProcessing, ByteLevel, RobertaProcessing, "
         "BertProcessing and Sequence are)", where, describe(value));
  }
  prefix_ids.insert(prefix_ids.begin(), before.begin(), before.end());
  suffix_ids.insert(suffix_ids.end(), after.begin(), after.end());
}

BpeTokenizer::BpeTokenizer(const nlohmann::json& tokenizer_json, const std::string& source) {
  auto state = std::make_unique<State>();
  state->source = source;
  state->instance = next_instance++;
  try {
    state->load(tokenizer_json);
  } catch (const UserError& e) {
    fail("{}: {}", source, e.what());
  } catch (const json::exception& e) {
    fail("{}: {}", source, e.what());
  }
  state_ = std::move(state);
}

namespace {

json read_json(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open the tokenizer file", path);
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    fail("{}: not valid JSON: {}", path, e.what());
  }
}

}  // namespace

BpeTokenizer::BpeTokenizer(const std::string& path) : BpeTokenizer(read_json(path), path) {}
BpeTokenizer::~BpeTokenizer() = default;
BpeTokenizer::BpeTokenizer(BpeTokenizer&&) noexcept = default;
BpeTokenizer& BpeTokenizer::operator=(BpeTokenizer&&) noexcept = default;

BpeTokenizer::Scratch& BpeTokenizer::local_scratch() const {
  thread_local Scratch scratch;
  if (scratch.instance != state_->instance) {
    scratch.cache.clear();
    scratch.cache_ids.clear();
    scratch.instance = state_->instance;
  }
  return scratch;
}

void BpeTokenizer::merge(std::string_view bytes, Scratch& sc, std::vector<int32_t>& out) const {
  const State& s = *state_;
  if (s.ignore_merges) {
    auto it = s.model_ids_by_bytes.find(bytes);
    if (it != s.model_ids_by_bytes.end()) {
      out.push_back(it->second);
      return;
    }
  }
  // A byte missing from the vocabulary becomes the unknown token (consecutive ones fused
  // into one when fuse_unk), or is dropped when there is none, as in Hugging Face.
  std::vector<int32_t>& symbols = sc.symbols;
  symbols.clear();
  bool previous_unknown = false;
  for (char c : bytes) {
    int32_t id = s.byte_ids[static_cast<uint8_t>(c)];
    if (id >= 0) {
      symbols.push_back(id);
      previous_unknown = false;
    } else if (s.unk_id >= 0) {
      if (!(s.fuse_unk && previous_unknown)) symbols.push_back(s.unk_id);
      previous_unknown = true;
    }
  }
  int32_t count = static_cast<int32_t>(symbols.size());
  if (count <= 1) {
    out.insert(out.end(), symbols.begin(), symbols.end());
    return;
  }
  // Merge the lowest-ranked adjacent pair first, leftmost among equals; a heap keeps this
  // O(n log n) for long pieces. Merged-away symbols are marked -1; stale entries skipped.
  std::vector<int32_t>& prev = sc.prev;
  std::vector<int32_t>& next = sc.next;
  std::vector<HeapEntry>& heap = sc.heap;
  prev.resize(count);
  next.resize(count);
  heap.clear();
  auto push = [&](int32_t pos) {
    if (const MergeTable::Merge* m = s.merges.find(symbols[pos], symbols[next[pos]])) {
      heap.push_back({m->rank, pos});
      std::push_heap(heap.begin(), heap.end(), std::greater<>());
    }
  };
  for (int32_t i = 0; i < count; ++i) {
    prev[i] = i - 1;
    next[i] = i + 1 < count ? i + 1 : -1;
  }
  for (int32_t i = 0; i + 1 < count; ++i) push(i);
  while (!heap.empty()) {
    HeapEntry top = heap.front();
    std::pop_heap(heap.begin(), heap.end(), std::greater<>());
    heap.pop_back();
    int32_t right = next[top.pos];
    if (symbols[top.pos] < 0 || right < 0) continue;
    const MergeTable::Merge* m = s.merges.find(symbols[top.pos], symbols[right]);
    if (m == nullptr || m->rank != top.rank) continue;
    symbols[top.pos] = m->merged;
    symbols[right] = -1;
    next[top.pos] = next[right];
    if (next[right] >= 0) prev[next[right]] = top.pos;
    if (prev[top.pos] >= 0) push(prev[top.pos]);
    if (next[top.pos] >= 0) push(top.pos);
  }
  for (int32_t i = 0; i >= 0; i = next[i]) out.push_back(symbols[i]);
}

void BpeTokenizer::encode_piece(std::string_view bytes, Scratch& sc,
                                std::vector<int32_t>& out) const {
  bool cacheable = bytes.size() <= kCacheMaxBytes;
  if (cacheable) {
    auto it = sc.cache.find(bytes);
    if (it != sc.cache.end()) {
      auto first = sc.cache_ids.begin() + it->second.first;
      out.insert(out.end(), first, first + it->second.second);
      return;
    }
  }
  size_t before = out.size();
  merge(bytes, sc, out);
  if (!cacheable) return;
  if (sc.cache.size() >= kCacheEntries) {
    sc.cache.clear();
    sc.cache_ids.clear();
  }
  auto offset = static_cast<uint32_t>(sc.cache_ids.size());
  sc.cache_ids.insert(sc.cache_ids.end(), out.begin() + before, out.end());
  sc.cache.emplace(std::string(bytes),
                   std::make_pair(offset, static_cast<uint32_t>(out.size() - before)));
}

void BpeTokenizer::encode_into(std::string_view text, AddSpecialTokens add, Scratch& sc,
                               std::vector<int32_t>& out) const {
  const State& s = *state_;
  out.clear();
  if (add == AddSpecialTokens::kYes) out = s.prefix_ids;
  // Hugging Face's order: added tokens matched on the input, normalization of the text
  // between them, added tokens matched on the normalized text, then the pre-tokenizer.
  s.added_splitter.split(text, AddedPass::kUnnormalized, sc.segments);
  for (const TextSegment& segment : sc.segments) {
    if (segment.added_id >= 0) {
      out.push_back(segment.added_id);
      continue;
    }
    std::string_view part = text.substr(segment.begin, segment.end - segment.begin);
    if (s.normalizer.normalize(part, sc.normalized)) part = sc.normalized;
    s.added_splitter.split(part, AddedPass::kNormalized, sc.inner);
    for (const TextSegment& inner : sc.inner) {
      if (inner.added_id >= 0) {
        out.push_back(inner.added_id);
        continue;
      }
      std::string_view rest = part.substr(inner.begin, inner.end - inner.begin);
      s.pre_tokenizer.split(rest, sc.pieces);
      for (const PreToken& piece : sc.pieces) {
        std::string_view bytes = rest.substr(piece.begin, piece.end - piece.begin);
        if (piece.space_prefix) {
          sc.spaced.assign(1, ' ');
          sc.spaced.append(bytes);
          bytes = sc.spaced;
        }
        encode_piece(bytes, sc, out);
      }
    }
  }
  if (add == AddSpecialTokens::kYes)
    out.insert(out.end(), s.suffix_ids.begin(), s.suffix_ids.end());
}

std::vector<int32_t> BpeTokenizer::encode(std::string_view text, AddSpecialTokens add) const {
  std::vector<int32_t> ids;
  encode_into(text, add, local_scratch(), ids);
  return ids;
}

std::vector<int32_t> BpeTokenizer::encode(const std::string& text) const {
  return encode(text, AddSpecialTokens::kYes);
}

std::vector<std::vector<int32_t>> BpeTokenizer::encode_batch(
    const std::vector<std::string>& texts, AddSpecialTokens add, int num_threads) const {
  std::vector<std::vector<int32_t>> results(texts.size());
  size_t threads = num_threads > 0 ? static_cast<size_t>(num_threads)
                                   : std::max(1u, std::thread::hardware_concurrency());
  threads = std::min(threads, texts.size());
  // Documents are handed out one at a time, so one long document does not hold up a
  // whole share of the batch.
  std::atomic<size_t> next{0};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto work = [&] {
    Scratch& sc = local_scratch();
    for (size_t i; (i = next.fetch_add(1)) < texts.size();) {
      try {
        encode_into(texts[i], add, sc, results[i]);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!error) error = std::current_exception();
        next = texts.size();
      }
    }
  };
  std::vector<std::thread> pool;
  for (size_t t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (std::thread& thread : pool) thread.join();
  if (error) std::rethrow_exception(error);
  return results;
}

std::string BpeTokenizer::decode(const std::vector<int32_t>& ids, SkipSpecialTokens skip) const {
  const State& s = *state_;
  std::string text;
  for (int32_t id : ids) {
    if (id < 0 || static_cast<size_t>(id) >= s.present.size() || !s.present[id]) continue;
    if (skip == SkipSpecialTokens::kYes && s.special[id]) continue;
    text += s.bytes[id];
  }
  return text;
}

std::string BpeTokenizer::decode(const std::vector<int32_t>& ids) const {
  return decode(ids, SkipSpecialTokens::kYes);
}

int32_t BpeTokenizer::eos_id() const {
  if (state_->eos < 0)
    fail("{}: no end-of-document token (a special added token named <|endoftext|>, "
         "<|end_of_text|>, </s>, <eos> or <|eos|>)", state_->source);
  return state_->eos;
}

int64_t BpeTokenizer::vocab_size() const { return static_cast<int64_t>(state_->present.size()); }

std::optional<int32_t> BpeTokenizer::token_to_id(std::string_view token) const {
  auto it = state_->ids_by_spelling.find(token);
  if (it == state_->ids_by_spelling.end()) return std::nullopt;
  return it->second;
}

std::optional<std::string> BpeTokenizer::id_to_token(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= state_->present.size() || !state_->present[id])
    return std::nullopt;
  return state_->spelling[id];
}

}  // namespace sigma
