// The cuts before BPE (see pretokenizer.h): PCRE2 regexes, the rules that turn a piece's
// matches and the gaps between them into pre-tokens, NFC through ICU, and added-token matching.
#include "core/data/pretokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <nlohmann/json.hpp>
#include <unicode/bytestream.h>
#include <unicode/normalizer2.h>
#include <unicode/utf8.h>

#include "core/data/byte_unicode.h"
#include "core/error.h"

namespace sigma {

namespace {

using nlohmann::json;

// Match buffers per thread: a JIT stack larger than PCRE2's 32 KiB default, so that long
// runs of one character class (megabytes of spaces, say) do not exhaust it.
struct MatchScratch {
  pcre2_match_data* data = pcre2_match_data_create(1, nullptr);
  pcre2_match_context* context = pcre2_match_context_create(nullptr);
  pcre2_jit_stack* stack = pcre2_jit_stack_create(32 * 1024, 16 << 20, nullptr);

  MatchScratch() { pcre2_jit_stack_assign(context, nullptr, stack); }
  ~MatchScratch() {
    pcre2_jit_stack_free(stack);
    pcre2_match_context_free(context);
    pcre2_match_data_free(data);
  }
};

MatchScratch& match_scratch() {
  thread_local MatchScratch scratch;
  return scratch;
}

std::string pcre2_message(int code) {
  PCRE2_UCHAR buffer[256];
  pcre2_get_error_message(code, buffer, sizeof buffer);
  return reinterpret_cast<const char*>(buffer);
}

// Calls emit(begin, end, is_match) for each match of `regex` in `subject` and each gap
// between matches, in order. Empty matches are skipped, as Hugging Face skips them.
template <typename Emit>
void for_each_segment(const Regex& regex, std::string_view subject, Emit&& emit) {
  size_t pos = 0;
  size_t search = 0;
  size_t begin = 0;
  size_t end = 0;
  while (search < subject.size() && regex.find(subject, search, begin, end)) {
    if (begin == end) {
      if (begin >= subject.size()) break;
      search = begin;
      next_code_point(subject, search);
      continue;
    }
    if (begin > pos) emit(pos, begin, false);
    emit(begin, end, true);
    pos = search = end;
  }
  if (pos < subject.size()) emit(pos, subject.size(), false);
}

// Turns the segments of one piece into pre-tokens by Split's delimiter behaviour. The
// delimiters are the matches, or the gaps when inverted.
class BehaviorSink {
 public:
  BehaviorSink(SplitBehavior behavior, bool invert, size_t base, std::vector<PreToken>& out)
      : behavior_(behavior), invert_(invert), base_(base), out_(out) {}

  void operator()(size_t begin, size_t end, bool is_match) {
    bool delimiter = is_match != invert_;
    switch (behavior_) {
      case SplitBehavior::kRemoved:
        if (!delimiter) push(begin, end);
        break;
      case SplitBehavior::kIsolated:
        push(begin, end);
        break;
      case SplitBehavior::kContiguous:
        // Neighbours of the same kind fuse: runs of delimiters, and (inverted) runs of matches.
        if (has_previous_ && previous_delimiter_ == delimiter) extend(end);
        else push(begin, end);
        break;
      case SplitBehavior::kMergedWithPrevious:
        // A delimiter joins the piece before it only when that piece is not a delimiter.
        if (delimiter && open_) {
          extend(end);
          open_ = false;
        } else {
          push(begin, end);
          open_ = !delimiter;
        }
        break;
      case SplitBehavior::kMergedWithNext:
        // A delimiter takes in the piece after it when that piece is not a delimiter.
        if (!delimiter && open_) {
          extend(end);
          open_ = false;
        } else {
          push(begin, end);
          open_ = delimiter;
        }
        break;
    }
    has_previous_ = true;
    previous_delimiter_ = delimiter;
  }

 private:
  void push(size_t begin, size_t end) { out_.push_back({base_ + begin, base_ + end, false}); }
  void extend(size_t end) { out_.back().end = base_ + end; }

  SplitBehavior behavior_;
  bool invert_;
  size_t base_;
  std::vector<PreToken>& out_;
  bool has_previous_ = false;
  bool previous_delimiter_ = false;
  bool open_ = false;
};

SplitBehavior parse_behavior(const json& value, const std::string& where) {
  static const std::pair<const char*, SplitBehavior> kNames[] = {
      {"Removed", SplitBehavior::kRemoved},
      {"Isolated", SplitBehavior::kIsolated},
      {"MergedWithPrevious", SplitBehavior::kMergedWithPrevious},
      {"MergedWithNext", SplitBehavior::kMergedWithNext},
      {"Contiguous", SplitBehavior::kContiguous}};
  if (value.is_string()) {
    for (const auto& [name, behavior] : kNames)
      if (value.get<std::string>() == name) return behavior;
  }
  fail("{}.behavior is {}; expected one of Removed, Isolated, MergedWithPrevious, "
       "MergedWithNext, Contiguous", where, value.dump());
}

const char* behavior_name(SplitBehavior behavior) {
  switch (behavior) {
    case SplitBehavior::kRemoved: return "Removed";
    case SplitBehavior::kIsolated: return "Isolated";
    case SplitBehavior::kMergedWithPrevious: return "MergedWithPrevious";
    case SplitBehavior::kMergedWithNext: return "MergedWithNext";
    case SplitBehavior::kContiguous: return "Contiguous";
  }
  return "";
}

// Decodes the character ending at text[end] that starts at or after `floor`, if valid.
std::optional<char32_t> code_point_before(std::string_view text, size_t floor, size_t end,
                                          size_t& begin) {
  begin = end - 1;
  while (begin > floor && end - begin < 4 && (static_cast<uint8_t>(text[begin]) & 0xC0) == 0x80)
    --begin;
  size_t pos = begin;
  std::optional<char32_t> cp = next_code_point(text, pos);
  return pos == end ? cp : std::nullopt;
}

// PCRE2 in UCP mode counts U+180E (MONGOLIAN VOWEL SEPARATOR, white space before Unicode
// 6.3) as \s; Oniguruma, which Hugging Face uses, follows Unicode's White_Space property.
// So \s and \S are spelled out as White_Space ranges, inside classes and out.
constexpr std::string_view kWhiteSpaceRanges =
    R"(\t-\r\x20\x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000})";
constexpr std::string_view kNonWhiteSpaceRanges =
    R"(\x00-\x08\x0e-\x1f\x21-\x{84}\x{86}-\x{9f}\x{a1}-\x{167f}\x{1681}-\x{1fff}\x{200b}-\x{2027})"
    R"(\x{202a}-\x{202e}\x{2030}-\x{205e}\x{2060}-\x{2fff}\x{3001}-\x{10ffff})";

std::string spell_out_white_space(std::string_view pattern) {
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < pattern.size(); ++i) {
    char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      char next = pattern[++i];
      if (next == 's' || next == 'S') {
        std::string_view ranges = next == 's' ? kWhiteSpaceRanges : kNonWhiteSpaceRanges;
        if (in_class) out.append(ranges);
        else out.append("[").append(ranges).append("]");
      } else if (next == 'Q') {  // \Q...\E quotes its text verbatim
        size_t end = pattern.find("\\E", i + 1);
        end = end == std::string_view::npos ? pattern.size() : end + 2;
        out.append(pattern.substr(i - 1, end - (i - 1)));
        i = end - 1;
      } else {
        out.push_back(c);
        out.push_back(next);
      }
    } else if (!in_class && c == '[') {
      in_class = true;
      out.push_back(c);
      // A ']' right after '[' or '[^' is a literal member, not the end of the class.
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') out.push_back(pattern[++i]);
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') out.push_back(pattern[++i]);
    } else if (in_class && c == '[' && i + 1 < pattern.size() && pattern[i + 1] == ':') {
      size_t end = pattern.find(":]", i + 2);  // a POSIX class such as [:alpha:]
      end = end == std::string_view::npos ? pattern.size() : end + 2;
      out.append(pattern.substr(i, end - i));
      i = end - 1;
    } else {
      if (in_class && c == ']') in_class = false;
      out.push_back(c);
    }
  }
  return out;
}

}  // namespace

Normalizer Normalizer::from_json(const json& value) {
  Normalizer normalizer;
  if (value.is_null()) return normalizer;
  auto type_of = [](const json& item) {
    return item.is_object() && item.contains("type") && item["type"].is_string()
               ? item["type"].get<std::string>()
               : std::string();
  };
  auto refuse = [](const json& item, const std::string& type) {
    std::string shown = type.empty() ? item.dump().substr(0, 60) : "\"" + type + "\"";
    fail("normalizer {} is not supported (sigma reads NFC, or a Sequence of NFC, only)", shown);
  };
  std::string type = type_of(value);
  if (type == "Sequence") {
    auto list = value.find("normalizers");
    if (list == value.end() || !list->is_array()) fail("normalizer.normalizers must be a list");
    for (const json& item : *list)
      if (type_of(item) != "NFC") refuse(item, type_of(item));
    normalizer.nfc_ = !list->empty();
  } else if (type == "NFC") {
    normalizer.nfc_ = true;
  } else {
    refuse(value, type);
  }
  return normalizer;
}

Normalizer Normalizer::nfc() {
  Normalizer normalizer;
  normalizer.nfc_ = true;
  return normalizer;
}

bool Normalizer::normalize(std::string_view text, std::string& out) const {
  if (!nfc_) return false;
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* nfc = icu::Normalizer2::getNFCInstance(status);
  if (U_FAILURE(status)) fail("ICU has no NFC data: {}", u_errorName(status));
  SIGMA_CHECK(text.size() < static_cast<size_t>(INT32_MAX), "text of {} bytes is too long to "
              "normalize", text.size());
  // Valid runs between invalid bytes are checked (and, rarely, rewritten) one by one; `out`
  // is only built once some run changes, so already-normal text costs a single scan.
  bool changed = false;
  size_t copied = 0;  // text[0, copied) is reflected in `out` once changed
  auto normalize_run = [&](size_t begin, size_t end) {
    if (begin == end) return;
    icu::StringPiece run(text.data() + begin, static_cast<int32_t>(end - begin));
    bool normal = nfc->isNormalizedUTF8(run, status);
    if (U_FAILURE(status)) fail("NFC check failed: {}", u_errorName(status));
    if (normal) return;
    if (!changed) out.clear();
    changed = true;
    out.append(text.substr(copied, begin - copied));
    icu::StringByteSink<std::string> sink(&out);
    nfc->normalizeUTF8(0, run, sink, nullptr, status);
    if (U_FAILURE(status)) fail("NFC normalization failed: {}", u_errorName(status));
    copied = end;
  };
  const auto* bytes = reinterpret_cast<const uint8_t*>(text.data());
  auto length = static_cast<int32_t>(text.size());
  int32_t run_begin = 0;
  for (int32_t i = 0; i < length;) {
    int32_t start = i;
    UChar32 c = 0;
    U8_NEXT(bytes, i, length, c);
    if (c < 0) {  // an ill-formed sequence: bytes [start, i) stay as they are
      normalize_run(static_cast<size_t>(run_begin), static_cast<size_t>(start));
      run_begin = i;
    }
  }
  normalize_run(static_cast<size_t>(run_begin), text.size());
  if (changed) out.append(text.substr(copied));
  return changed;
}

bool read_flag(const json& object, const char* key, bool fallback, const std::string& where) {
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) fail("{}.{} must be true or false, not {}", where, key, it->dump());
  return it->get<bool>();
}

Regex::Regex(std::string_view pattern, Syntax syntax) {
  // PCRE2_LITERAL admits neither UCP nor any other pattern option.
  uint32_t options = PCRE2_UTF | PCRE2_MATCH_INVALID_UTF;
  options |= syntax == Syntax::kLiteral ? PCRE2_LITERAL : PCRE2_UCP;
  std::string source = syntax == Syntax::kLiteral ? std::string(pattern)
                                                   : spell_out_white_space(pattern);
  int error = 0;
  PCRE2_SIZE offset = 0;
  code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(source.data()), source.size(), options,
                        &error, &offset, nullptr);
  if (code_ == nullptr)
    fail("regex \"{}\" does not compile: {}", pattern, pcre2_message(error));
  jit_ = pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE) == 0;
}

Regex::~Regex() { pcre2_code_free(code_); }

Regex::Regex(Regex&& other) noexcept : code_(other.code_), jit_(other.jit_) {
  other.code_ = nullptr;
}

Regex& Regex::operator=(Regex&& other) noexcept {
  std::swap(code_, other.code_);
  std::swap(jit_, other.jit_);
  return *this;
}

bool Regex::find(std::string_view subject, size_t start, size_t& begin, size_t& end) const {
  if (subject.empty()) return false;
  MatchScratch& scratch = match_scratch();
  auto text = reinterpret_cast<PCRE2_SPTR>(subject.data());
  int rc = jit_ ? pcre2_jit_match(code_, text, subject.size(), start, 0, scratch.data,
                                  scratch.context)
                : pcre2_match(code_, text, subject.size(), start, 0, scratch.data,
                              scratch.context);
  if (rc == PCRE2_ERROR_NOMATCH) return false;
  // rc == 0 only says the pattern's capture groups did not fit: the match itself is there.
  if (rc < 0) fail("regex matching failed on a text of {} bytes: {}", subject.size(),
                   pcre2_message(rc));
  const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(scratch.data);
  begin = ovector[0];
  end = ovector[1];
  return true;
}

PreTokenizer PreTokenizer::from_json(const json& value) {
  PreTokenizer result;
  result.add_step(value, "pre_tokenizer");
  int byte_levels = 0;
  for (const Step& step : result.steps_) byte_levels += step.kind == Kind::kByteLevel;
  if (byte_levels != 1 || result.steps_.back().kind != Kind::kByteLevel)
    fail("pre_tokenizer: byte-level BPE needs exactly one ByteLevel pre-tokenizer, last in "
         "its Sequence");
  return result;
}

PreTokenizer PreTokenizer::byte_level(bool add_prefix_space) {
  return from_json({{"type", "ByteLevel"}, {"add_prefix_space", add_prefix_space},
                    {"trim_offsets", true}, {"use_regex", true}});
}

PreTokenizer PreTokenizer::split_then_byte_level(std::string_view pattern) {
  json split = {{"type", "Split"}, {"pattern", {{"Regex", std::string(pattern)}}},
                {"behavior", "Isolated"}, {"invert", false}};
  json byte_level = {{"type", "ByteLevel"}, {"add_prefix_space", false},
                     {"trim_offsets", true}, {"use_regex", false}};
  return from_json({{"type", "Sequence"}, {"pretokenizers", {split, byte_level}}});
}

void PreTokenizer::add_step(const json& value, const std::string& where) {
  if (!value.is_object() || !value.contains("type") || !value["type"].is_string())
    fail("{} must be an object with a \"type\" (byte-level BPE needs a ByteLevel "
         "pre-tokenizer), not {}", where, value.dump().substr(0, 80));
  std::string type = value["type"].get<std::string>();
  if (type == "Sequence") {
    auto it = value.find("pretokenizers");
    if (it == value.end() || !it->is_array() || it->empty())
      fail("{}.pretokenizers must be a non-empty list", where);
    for (size_t i = 0; i < it->size(); ++i)
      add_step((*it)[i], fmt::format("{}.pretokenizers[{}]", where, i));
    return;
  }
  Step step;
  if (type == "ByteLevel") {
    // Hugging Face's defaults for fields an older file leaves out.
    step.kind = Kind::kByteLevel;
    step.add_prefix_space = read_flag(value, "add_prefix_space", true, where);
    step.trim_offsets = read_flag(value, "trim_offsets", true, where);
    if (read_flag(value, "use_regex", true, where)) {
      step.pattern = kGpt2Pattern;
      step.regex = std::make_shared<const Regex>(kGpt2Pattern);
    }
  } else if (type == "Split") {
    auto pattern = value.find("pattern");
    bool is_regex = pattern != value.end() && pattern->is_object() && pattern->contains("Regex");
    bool is_string = pattern != value.end() && pattern->is_object() && pattern->contains("String");
    if (is_regex == is_string || !(*pattern)[is_regex ? "Regex" : "String"].is_string())
      fail("{}.pattern must be {{\"Regex\": \"...\"}} or {{\"String\": \"...\"}}", where);
    step.pattern = (*pattern)[is_regex ? "Regex" : "String"].get<std::string>();
    step.literal = is_string;
    try {
      step.regex = std::make_shared<const Regex>(
          step.pattern, is_regex ? Regex::Syntax::kPattern : Regex::Syntax::kLiteral);
    } catch (const UserError& e) {
      fail("{}.pattern: {}", where, e.what());
    }
    step.behavior = parse_behavior(value.value("behavior", json()), where);
    step.invert = read_flag(value, "invert", false, where);
  } else {
    fail("{}: pre-tokenizer type \"{}\" is not supported (ByteLevel, Split and Sequence are)",
         where, type);
  }
  steps_.push_back(std::move(step));
}

void PreTokenizer::apply(const Step& step, std::string_view text, const PreToken& piece,
                         std::vector<PreToken>& out) const {
  std::string_view subject = text.substr(piece.begin, piece.end - piece.begin);
  if (step.kind == Kind::kSplit) {
    BehaviorSink sink(step.behavior, step.invert, piece.begin, out);
    for_each_segment(*step.regex, subject, sink);
    return;
  }
  bool prefix = step.add_prefix_space && subject.front() != ' ';
  if (step.regex == nullptr) {
    out.push_back({piece.begin, piece.end, prefix});
    return;
  }
  if (!prefix) {
    BehaviorSink sink(SplitBehavior::kIsolated, false, piece.begin, out);
    for_each_segment(*step.regex, subject, sink);
    return;
  }
  // The regex must see the inserted space; pieces are mapped back to the text's bytes.
  thread_local std::string spaced;
  spaced.assign(1, ' ');
  spaced.append(subject);
  for_each_segment(*step.regex, spaced, [&](size_t begin, size_t end, bool) {
    if (begin == 0) out.push_back({piece.begin, piece.begin + end - 1, true});
    else out.push_back({piece.begin + begin - 1, piece.begin + end - 1, false});
  });
}

void PreTokenizer::split(std::string_view text, std::vector<PreToken>& out) const {
  out.clear();
  if (text.empty()) return;
  thread_local std::vector<PreToken> pieces;
  pieces.assign(1, PreToken{0, text.size(), false});
  for (const Step& step : steps_) {
    out.clear();
    for (const PreToken& piece : pieces) apply(step, text, piece, out);
    pieces.swap(out);
  }
  out.swap(pieces);
}

nlohmann::ordered_json PreTokenizer::to_json() const {
  nlohmann::ordered_json list = nlohmann::ordered_json::array();
  for (const Step& step : steps_) {
    nlohmann::ordered_json j;
    if (step.kind == Kind::kByteLevel) {
      j["type"] = "ByteLevel";
      j["add_prefix_space"] = step.add_prefix_space;
      j["trim_offsets"] = step.trim_offsets;
      j["use_regex"] = step.regex != nullptr;
    } else {
      j["type"] = "Split";
      j["pattern"][step.literal ? "String" : "Regex"] = step.pattern;
      j["behavior"] = behavior_name(step.behavior);
      j["invert"] = step.invert;
    }
    list.push_back(std::move(j));
  }
  if (list.size() == 1) return list[0];
  return {{"type", "Sequence"}, {"pretokenizers", std::move(list)}};
}

void AddedTokenSplitter::Trie::add(std::string_view content, int32_t token) {
  int32_t node = 0;
  for (char c : content) {
    auto byte = static_cast<uint8_t>(c);
    int32_t child = child_of(node, byte);
    if (child < 0) {
      child = static_cast<int32_t>(nodes_.size());
      nodes_[node].children.emplace_back(byte, child);
      nodes_.emplace_back();
    }
    node = child;
  }
  nodes_[node].token = token;
  first_byte_[static_cast<uint8_t>(content.front())] = true;
}

int32_t AddedTokenSplitter::Trie::child_of(int32_t node, uint8_t byte) const {
  for (const auto& [b, child] : nodes_[node].children)
    if (b == byte) return child;
  return -1;
}

int32_t AddedTokenSplitter::Trie::longest_at(std::string_view text, size_t pos,
                                             size_t& end) const {
  if (!first_byte_[static_cast<uint8_t>(text[pos])]) return -1;
  int32_t node = 0;
  int32_t found = -1;
  for (size_t i = pos; i < text.size(); ++i) {
    node = child_of(node, static_cast<uint8_t>(text[i]));
    if (node < 0) break;
    if (nodes_[node].token >= 0) {
      found = nodes_[node].token;
      end = i + 1;
    }
  }
  return found;
}

AddedTokenSplitter::AddedTokenSplitter(const std::vector<AddedToken>& tokens,
                                       const Normalizer& normalizer)
    : tokens_(tokens),
      // Word characters as Hugging Face's single_word check sees them (Unicode's \w).
      word_char_(std::make_shared<const Regex>(
          R"(^[\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\p{Join_Control}])")) {
  for (size_t i = 0; i < tokens_.size(); ++i) {
    SIGMA_CHECK(!tokens_[i].content.empty(), "added token {} is empty", tokens_[i].id);
    if (!tokens_[i].normalized) {
      raw_.add(tokens_[i].content, static_cast<int32_t>(i));
      continue;
    }
    std::string normal;
    bool changed = normalizer.normalize(tokens_[i].content, normal);
    normalized_.add(changed ? normal : tokens_[i].content, static_cast<int32_t>(i));
  }
}

bool AddedTokenSplitter::is_word_char(std::string_view character) const {
  size_t begin = 0;
  size_t end = 0;
  return word_char_->find(character, 0, begin, end);
}

void AddedTokenSplitter::split(std::string_view text, AddedPass pass,
                               std::vector<TextSegment>& out) const {
  const Trie& trie = pass == AddedPass::kUnnormalized ? raw_ : normalized_;
  out.clear();
  if (trie.empty()) out.push_back({0, text.size(), -1});
  else split_range(trie, text, 0, text.size(), out);
}

void AddedTokenSplitter::split_range(const Trie& trie, std::string_view text, size_t begin,
                                     size_t end, std::vector<TextSegment>& out) const {
  text = text.substr(0, end);
  size_t start = begin;  // where the text not yet emitted begins
  size_t pos = begin;
  while (pos < end) {
    size_t match_end = 0;
    int32_t index = trie.longest_at(text, pos, match_end);
    if (index < 0) {
      ++pos;
      continue;
    }
    const AddedToken& token = tokens_[index];
    // A single_word token needs non-word characters (or the ends) on both sides; when the
    // longest match fails that, the search goes on after it, not inside it.
    if (token.single_word) {
      size_t before = 0;
      size_t after = match_end;
      bool word_before = pos > begin && code_point_before(text, begin, pos, before) &&
                         is_word_char(text.substr(before, pos - before));
      bool word_after = match_end < end && next_code_point(text, after) &&
                        is_word_char(text.substr(match_end, after - match_end));
      if (word_before || word_after) {
        pos = match_end;
        continue;
      }
    }
    size_t token_begin = pos;
    size_t token_end = match_end;
    for (size_t before = 0; token.lstrip && token_begin > start;) {
      std::optional<char32_t> c = code_point_before(text, start, token_begin, before);
      if (!c || !is_unicode_white_space(*c)) break;
      token_begin = before;
    }
    for (size_t after = token_end; token.rstrip && token_end < end; after = token_end) {
      std::optional<char32_t> c = next_code_point(text, after);
      if (!c || !is_unicode_white_space(*c)) break;
      token_end = after;
    }
    if (token_begin > start) out.push_back({start, token_begin, -1});
    out.push_back({token_begin, token_end, token.id});
    start = pos = token_end;
  }
  if (start < end) out.push_back({start, end, -1});
}

}  // namespace sigma
