// The cuts and rewrites a Hugging Face tokenizer makes before BPE, so that no token crosses
// them: added tokens with normalized = false are cut out of the text first
// (AddedTokenSplitter), the text between them is normalized (Normalizer: NFC, as Qwen2/Qwen3
// files ask), added tokens with normalized = true are cut out of the normalized text, and the
// rest is pre-tokenized by regular expressions (PreTokenizer). Supports the pre-tokenizers
// GPT-2, Llama-3 and Qwen2/o200k files use: ByteLevel (the GPT-2 regex, add_prefix_space,
// use_regex), Split (a regex or a literal string, the five delimiter behaviours, invert) and
// Sequence of these.
//
// Regexes are PCRE2 (UTF-8, Unicode properties, JIT-compiled). Hugging Face compiles the same
// patterns with Oniguruma; both read \p{L}, \p{N}, (?i:...) and lookahead alike, up to the
// Unicode version each library ships, and \s once it is spelled out as Unicode White_Space
// (PCRE2's \s also takes U+180E). Other escapes whose meaning differs (Oniguruma's \h is a
// hex digit) are not translated. Invalid UTF-8 never matches a pattern item
// (PCRE2_MATCH_INVALID_UTF), so such bytes fall between matches and stay in the output.
// NFC is ICU's; invalid UTF-8 bytes are kept unchanged and each valid run between them is
// normalized on its own (Hugging Face, taking a str, never sees such bytes).
//
// Leaves out: normalizers other than NFC (NFD, NFKC, Lowercase, Replace, ...), and the
// pre-tokenizers word-piece and unigram models use (Whitespace, Metaspace, Digits, ...).
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

struct pcre2_real_code_8;

namespace sigma {

// The pre-tokenizer regex of GPT-2, which ByteLevel applies when use_regex is true.
inline constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// An optional true/false field of a tokenizer.json object: absent or null gives `fallback`,
// anything else but a boolean is a UserError naming where.key.
bool read_flag(const nlohmann::json& object, const char* key, bool fallback,
               const std::string& where);

// tokenizer.json's "normalizer": none, or Unicode NFC (alone or in a Sequence of NFCs).
class Normalizer {
 public:
  // Reads the "normalizer" value (null: none); any other kind is a UserError naming it.
  static Normalizer from_json(const nlohmann::json& value);
  static Normalizer nfc();

  bool active() const { return nfc_; }
  // When normalizing changes `text`, writes the result to `out` and returns true; otherwise
  // (the common case: text already in NFC) returns false and leaves `out` alone.
  bool normalize(std::string_view text, std::string& out) const;

 private:
  bool nfc_ = false;
};

// A compiled PCRE2 pattern; thread-safe (match buffers are per thread).
class Regex {
 public:
  enum class Syntax { kPattern, kLiteral };
  // Throws UserError naming the pattern and PCRE2's message when it does not compile.
  explicit Regex(std::string_view pattern, Syntax syntax = Syntax::kPattern);
  ~Regex();
  Regex(Regex&& other) noexcept;
  Regex& operator=(Regex&& other) noexcept;
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // The first match in `subject` starting at or after byte `start`, as [begin, end).
  bool find(std::string_view subject, size_t start, size_t& begin, size_t& end) const;

 private:
  pcre2_real_code_8* code_ = nullptr;
  bool jit_ = false;
};

// One pre-token: bytes [begin, end) of the text, after a space that ByteLevel's
// add_prefix_space inserted when space_prefix is set (such a piece may have no bytes).
struct PreToken {
  size_t begin = 0;
  size_t end = 0;
  bool space_prefix = false;
};

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

class PreTokenizer {
 public:
  // Reads tokenizer.json's "pre_tokenizer" value. Byte-level BPE needs exactly one ByteLevel
  // pre-tokenizer, and it must come last (later ones would see byte-mapped text).
  static PreTokenizer from_json(const nlohmann::json& value);
  // GPT-2: ByteLevel with its regex.
  static PreTokenizer byte_level(bool add_prefix_space);
  // Llama-3 / Qwen2 / o200k: Split(pattern, Isolated), then ByteLevel without its regex.
  static PreTokenizer split_then_byte_level(std::string_view pattern);

  // Cuts `text` into pre-tokens (replacing `out`'s contents); none is empty.
  void split(std::string_view text, std::vector<PreToken>& out) const;
  // The "pre_tokenizer" value Hugging Face writes for this pre-tokenizer.
  nlohmann::ordered_json to_json() const;

 private:
  enum class Kind { kSplit, kByteLevel };
  struct Step {
    Kind kind = Kind::kSplit;
    std::string pattern;  // as written in the file, for to_json
    bool literal = false;
    std::shared_ptr<const Regex> regex;  // null for ByteLevel without use_regex
    SplitBehavior behavior = SplitBehavior::kIsolated;
    bool invert = false;
    bool add_prefix_space = false;
    bool trim_offsets = true;  // no effect on ids; kept so to_json round-trips
  };

  void add_step(const nlohmann::json& value, const std::string& where);
  void apply(const Step& step, std::string_view text, const PreToken& piece,
             std::vector<PreToken>& out) const;

  std::vector<Step> steps_;
};

// An added token of tokenizer.json's "added_tokens" (special or not).
struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool special = false;
  bool lstrip = false;       // the match takes in the white space before it
  bool rstrip = false;       // ... and after it
  bool single_word = false;  // matches only between non-word characters
  bool normalized = false;   // matched after normalization (second), else on the input (first)
};

// A stretch of text: an added token's id, or text for the pre-tokenizer (added_id -1).
struct TextSegment {
  size_t begin = 0;
  size_t end = 0;
  int32_t added_id = -1;
};

// Which added tokens a split looks for: those with normalized = false (on the input text),
// or those with normalized = true (on the normalized text between the former).
enum class AddedPass { kUnnormalized, kNormalized };

// Finds added tokens as Hugging Face does: leftmost-longest literal matches, in two passes.
class AddedTokenSplitter {
 public:
  // The contents of normalized tokens are matched in their normalized form, as in Hugging Face.
  explicit AddedTokenSplitter(const std::vector<AddedToken>& tokens = {},
                              const Normalizer& normalizer = {});
  // Cuts `text` into segments (replacing `out`'s contents), covering it in order.
  void split(std::string_view text, AddedPass pass, std::vector<TextSegment>& out) const;

 private:
  class Trie {
   public:
    void add(std::string_view content, int32_t token);
    bool empty() const { return nodes_.size() == 1; }
    // The longest token at text[pos...] (its index, and its end in `end`), or -1.
    int32_t longest_at(std::string_view text, size_t pos, size_t& end) const;

   private:
    struct Node {
      int32_t token = -1;
      std::vector<std::pair<uint8_t, int32_t>> children;
    };
    int32_t child_of(int32_t node, uint8_t byte) const;
    std::vector<Node> nodes_{1};
    std::array<bool, 256> first_byte_{};
  };

  void split_range(const Trie& trie, std::string_view text, size_t begin, size_t end,
                   std::vector<TextSegment>& out) const;
  bool is_word_char(std::string_view character) const;

  std::vector<AddedToken> tokens_;
  Trie raw_;
  Trie normalized_;
  std::shared_ptr<const Regex> word_char_;
};

}  // namespace sigma
