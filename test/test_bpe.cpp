// Byte-level BPE: the byte table, UTF-8 decoding, pre-tokenizer splits, merges by rank,
// the NFC normalizer, added tokens, post-processing, malformed tokenizer.json files, the trainer's output, and
// decode(encode(x)) == x on random bytes. Expected ids were read off Hugging Face
// `tokenizers` 0.23 on the same tokenizer.json; test/integration/tokenizer_parity.sh compares
// with it directly on a large text set.
#include "core/data/bpe_tokenizer.h"
#include "core/data/bpe_trainer.h"
#include "core/data/byte_unicode.h"
#include "core/data/pretokenizer.h"
#include "core/error.h"
#include "temp_dir.h"

#include <doctest/doctest.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <string>
#include <vector>

using namespace sigma;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

std::string spell(const std::string& bytes) { return bytes_to_vocab_string(bytes); }

// A GPT-2-style tokenizer.json whose vocabulary gives byte b the id b, then one id per new
// token of `merges` (raw bytes) and of `extra`, in order.
json tokenizer_json(const std::vector<std::pair<std::string, std::string>>& merges,
                    const std::vector<std::string>& extra = {}) {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[spell(std::string(1, static_cast<char>(b)))] = b;
  int next = 256;
  json merge_list = json::array();
  auto add = [&](const std::string& bytes) {
    if (!vocab.contains(spell(bytes))) vocab[spell(bytes)] = next++;
  };
  for (const auto& [left, right] : merges) {
    add(left + right);
    merge_list.push_back({spell(left), spell(right)});
  }
  for (const std::string& token : extra) add(token);
  return {{"added_tokens", json::array()},
          {"normalizer", nullptr},
          {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false},
                             {"trim_offsets", true}, {"use_regex", true}}},
          {"post_processor", nullptr},
          {"decoder", {{"type", "ByteLevel"}}},
          {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merge_list}}}};
}

json added_token(int id, const std::string& content, bool special, bool lstrip = false,
                 bool rstrip = false, bool single_word = false) {
  return {{"id", id}, {"content", content}, {"special", special}, {"lstrip", lstrip},
          {"rstrip", rstrip}, {"single_word", single_word}, {"normalized", !special}};
}

using Ids = std::vector<int32_t>;

std::vector<std::string> pieces(const PreTokenizer& pre_tokenizer, const std::string& text) {
  std::vector<PreToken> out;
  pre_tokenizer.split(text, out);
  std::vector<std::string> result;
  for (const PreToken& p : out) {
    result.emplace_back(p.space_prefix ? " " : "");
    result.back() += text.substr(p.begin, p.end - p.begin);
  }
  return result;
}

PreTokenizer split_literal(const char* behavior, bool invert) {
  json split = {{"type", "Split"}, {"pattern", {{"String", "l"}}}, {"behavior", behavior},
                {"invert", invert}};
  json byte_level = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}};
  return PreTokenizer::from_json({{"type", "Sequence"}, {"pretokenizers", {split, byte_level}}});
}

// The one-line message of the UserError that loading `file` raises ("" when none).
std::string load_error(const test::TempDir& dir, const std::string& text) {
  std::string path = dir.str("tokenizer.json");
  std::ofstream(path) << text;
  try {
    BpeTokenizer tokenizer(path);
  } catch (const UserError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("bpe: the byte table is GPT-2's and round-trips every byte") {
  CHECK(byte_to_code_point('A') == U'A');
  CHECK(byte_to_code_point(' ') == U'\u0120');   // Ġ
  CHECK(byte_to_code_point('\n') == U'\u010A');  // Ċ
  CHECK(byte_to_code_point(0xAD) == U'\u0143');  // the last of the 68 remapped bytes
  std::set<char32_t> seen;
  std::string all;
  for (int b = 0; b < 256; ++b) {
    seen.insert(byte_to_code_point(static_cast<uint8_t>(b)));
    CHECK(code_point_to_byte(byte_to_code_point(static_cast<uint8_t>(b))) == b);
    all.push_back(static_cast<char>(b));
  }
  CHECK(seen.size() == 256);
  CHECK(vocab_string_to_bytes(bytes_to_vocab_string(all)) == all);
  CHECK(vocab_string_to_bytes("hello world") == std::nullopt);  // ' ' is not in the table
}

TEST_CASE("bpe: UTF-8 decoding rejects overlong, surrogate, out-of-range and cut sequences") {
  for (std::string bad : {"\xC0\xAF", "\xE0\x80\xAF", "\xED\xA0\x80", "\xF4\x90\x80\x80",
                          "\xE2\x82", "\x80", "\xFF"}) {
    size_t pos = 0;
    CHECK(next_code_point(bad, pos) == std::nullopt);
    CHECK(pos == 1);
  }
  std::string euro = "\xE2\x82\xAC";
  size_t pos = 0;
  CHECK(next_code_point(euro, pos) == U'\u20AC');
  CHECK(pos == 3);
}

TEST_CASE("bpe: the GPT-2 regex splits words, contractions, digits and whitespace runs") {
  PreTokenizer gpt2 = PreTokenizer::byte_level(false);
  CHECK(pieces(gpt2, "hello world  it's 12  \n\n x") ==
        std::vector<std::string>{"hello", " world", " ", " it", "'s", " 12", "  \n\n", " x"});
  // add_prefix_space puts a space before a piece that does not start with one.
  CHECK(pieces(PreTokenizer::byte_level(true), "hi you") ==
        std::vector<std::string>{" hi", " you"});
  // Invalid UTF-8 never matches: such bytes become pieces of their own, none is lost.
  CHECK(pieces(gpt2, "ab\xFF\xFE" "cd \x80") ==
        std::vector<std::string>{"ab", "\xFF\xFE", "cd", " ", "\x80"});
  // U+180E is not white space for Oniguruma (Hugging Face's regexes), unlike PCRE2's \s.
  CHECK(pieces(gpt2, "a\u180Eb") == std::vector<std::string>{"a", "\u180E", "b"});
}

TEST_CASE("bpe: Split's five behaviours and invert match Hugging Face") {
  using V = std::vector<std::string>;
  CHECK(pieces(split_literal("Removed", false), "hello") == V{"he", "o"});
  CHECK(pieces(split_literal("Removed", true), "hello") == V{"l", "l"});
  CHECK(pieces(split_literal("Isolated", false), "llxll") == V{"l", "l", "x", "l", "l"});
  CHECK(pieces(split_literal("MergedWithPrevious", false), "llxll") == V{"l", "l", "xl", "l"});
  CHECK(pieces(split_literal("MergedWithPrevious", true), "hello") == V{"he", "l", "lo"});
  CHECK(pieces(split_literal("MergedWithNext", false), "llxll") == V{"l", "lx", "l", "l"});
  CHECK(pieces(split_literal("MergedWithNext", true), "hello") == V{"hel", "l", "o"});
  CHECK(pieces(split_literal("Contiguous", false), "ablllc") == V{"ab", "lll", "c"});
  CHECK(pieces(split_literal("Contiguous", true), "llxll") == V{"ll", "x", "ll"});
}

TEST_CASE("bpe: merges apply by rank, leftmost first among equals") {
  BpeTokenizer ranked(tokenizer_json({{"b", "c"}, {"a", "b"}, {"ab", "c"}}), "ranked");
  CHECK(ranked.encode("abc", AddSpecialTokens::kNo) == Ids{'a', 256});  // (b,c) ranks first
  CHECK(ranked.encode("ab", AddSpecialTokens::kNo) == Ids{257});
  BpeTokenizer repeated(tokenizer_json({{"a", "a"}, {"aa", "aa"}}), "repeated");
  CHECK(repeated.encode("aaa", AddSpecialTokens::kNo) == Ids{256, 'a'});
  CHECK(repeated.encode("aaaa", AddSpecialTokens::kNo) == Ids{257});
  CHECK(repeated.encode("aaaaa", AddSpecialTokens::kNo) == Ids{257, 'a'});
  CHECK(repeated.encode(std::string(10000, 'a'), AddSpecialTokens::kNo) == Ids(2500, 257));
  CHECK(repeated.decode({257, 'a', 256}) == "aaaaaaa");
  CHECK(repeated.vocab_size() == 258);
  CHECK(repeated.token_to_id(spell("aa")) == 256);
  CHECK(repeated.id_to_token(257) == spell("aaaa"));

  // ignore_merges: a piece that is itself in the vocabulary is one token, merges or not.
  json file = tokenizer_json({}, {"xyz"});
  CHECK(BpeTokenizer(file, "plain").encode("xyz", AddSpecialTokens::kNo) == Ids{'x', 'y', 'z'});
  file["model"]["ignore_merges"] = true;
  BpeTokenizer whole(file, "ignore_merges");
  CHECK(whole.encode("xyz", AddSpecialTokens::kNo) == Ids{256});
  CHECK(whole.encode("xyzx", AddSpecialTokens::kNo) == Ids{'x', 'y', 'z', 'x'});
}

TEST_CASE("bpe: added tokens are cut out first: specials, lstrip/rstrip, single_word") {
  json file = tokenizer_json({});
  file["added_tokens"] = {added_token(256, "<|eot|>", true),
                          added_token(257, "<m>", true, true, true),
                          added_token(258, "ab", false, false, false, true)};
  BpeTokenizer tokenizer(file, "added");
  auto encode = [&](const std::string& text) {
    return tokenizer.encode(text, AddSpecialTokens::kNo);
  };
  CHECK(encode("hi<|eot|>there") == Ids{'h', 'i', 256, 't', 'h', 'e', 'r', 'e'});
  CHECK(encode("a  <m>  b") == Ids{'a', 257, 'b'});  // both sides' spaces are absorbed
  CHECK(encode("1ab") == Ids{'1', 'a', 'b'});         // a word character before "ab"
  CHECK(encode("-ab-") == Ids{'-', 258, '-'});
  CHECK(encode("ab\u00B2") == Ids{258, 0xC2, 0xB2});  // ² is No, not a word character
  CHECK(tokenizer.decode(encode("hi<|eot|>")) == "hi");
  CHECK(tokenizer.decode(encode("hi<|eot|>"), SkipSpecialTokens::kNo) == "hi<|eot|>");
  CHECK_THROWS_AS(tokenizer.eos_id(), UserError);  // <|eot|> is not an end-of-document name

  // Leftmost-longest: the longest token at the first position where one matches, and when
  // that one fails single_word, the search resumes after it (not at a shorter token).
  file["added_tokens"] = {added_token(256, "abc", false, false, false, true),
                          added_token(257, "ab", false)};
  BpeTokenizer longest(file, "longest");
  CHECK(longest.encode("abcd", AddSpecialTokens::kNo) == Ids{'a', 'b', 'c', 'd'});
  CHECK(longest.encode("xab", AddSpecialTokens::kNo) == Ids{'x', 257});
}

TEST_CASE("bpe: NFC composes text, keeping invalid UTF-8 bytes as they are") {
  Normalizer nfc = Normalizer::nfc();
  std::string out = "untouched";
  CHECK_FALSE(nfc.normalize("plain text, caf\u00e9", out));
  CHECK(out == "untouched");
  CHECK_FALSE(nfc.normalize("e\xff\u0301", out));  // the bad byte parts e from its accent
  std::vector<std::pair<std::string, std::string>> cases = {
      {"e\u0301", "\u00e9"},
      {"\u212b", "\u00c5"},                     // Angstrom sign -> A with ring
      {"\u1100\u1161\u11a8", "\uac01"},         // Hangul jamo -> one syllable
      {"q\u0307\u0323", "q\u0323\u0307"},       // marks reordered by combining class
      {"\xff" "e\u0301\xfe a\u030a\xc3", "\xff\u00e9\xfe \u00e5\xc3"},
  };
  for (const auto& test_case : cases) {  // no structured binding: INFO captures it (clang 14)
    const auto& [text, wanted] = test_case;
    INFO(test_case.first);
    REQUIRE(nfc.normalize(text, out));
    CHECK(out == wanted);
  }
}

TEST_CASE("bpe: the NFC normalizer applies between added tokens, before pre-tokenizing") {
  json spec = tokenizer_json({{"\xc3", "\xa9"}});  // "\u00e9" is token 256
  spec["added_tokens"] = {added_token(257, "cafe\u0301", false),  // matched after NFC
                          added_token(258, "<a\u0301>", true)};   // matched on the input
  BpeTokenizer plain(spec, "plain");
  CHECK(plain.encode("e\u0301") == Ids{'e', 0xcc, 0x81});
  spec["normalizer"] = {{"type", "Sequence"}, {"normalizers", {{{"type", "NFC"}}}}};
  BpeTokenizer tok(spec, "nfc");
  CHECK(tok.encode("e\u0301") == Ids{256});
  CHECK(tok.encode("\u00e9") == Ids{256});
  CHECK(tok.encode("e\u0301\xff e\u0301") == Ids{256, 255, ' ', 256});
  CHECK(tok.encode("caf\u00e9!") == Ids{257, '!'});
  CHECK(tok.encode("cafe\u0301") == Ids{257});
  CHECK(tok.encode("<a\u0301>e\u0301") == Ids{258, 256});
  CHECK(tok.encode("<\u00e1>") == Ids{'<', 0xc3, 0xa1, '>'});
  // As in Hugging Face, a normalized added token decodes from its NFC form through the byte
  // table, where "\u00e9" stands for the byte 0xE9.
  CHECK(tok.decode(Ids{257}) == "caf\xe9");
  CHECK(tok.decode(Ids{258}, SkipSpecialTokens::kNo) == "<a\u0301>");
}

TEST_CASE("bpe: the post-processor adds BOS and EOS, decode skips special tokens") {
  json file = tokenizer_json({});
  file["added_tokens"] = {added_token(256, "<|begin_of_text|>", true),
                          added_token(257, "<|end_of_text|>", true)};
  auto special = [](const char* name) {
    return json{{"SpecialToken", {{"id", name}, {"type_id", 0}}}};
  };
  json templ = {{"type", "TemplateProcessing"},
                {"single", {special("<|begin_of_text|>"),
                            {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                            special("<|end_of_text|>")}},
                {"special_tokens",
                 {{"<|begin_of_text|>", {{"id", "<|begin_of_text|>"}, {"ids", {256}}}},
                  {"<|end_of_text|>", {{"id", "<|end_of_text|>"}, {"ids", {257}}}}}}};
  file["post_processor"] = {{"type", "Sequence"},
                            {"processors", {{{"type", "ByteLevel"}}, templ}}};
  BpeTokenizer tokenizer(file, "template");
  CHECK(tokenizer.encode(std::string("hi")) == Ids{256, 'h', 'i', 257});
  CHECK(tokenizer.encode("hi", AddSpecialTokens::kNo) == Ids{'h', 'i'});
  CHECK(tokenizer.decode(Ids{256, 'h', 'i', 257}) == "hi");
  CHECK(tokenizer.decode(Ids{256, 'h', 999, -1, 'i'}, SkipSpecialTokens::kNo) ==
        "<|begin_of_text|>hi");  // ids outside the vocabulary are skipped
  CHECK(tokenizer.eos_id() == 257);
  CHECK(tokenizer.vocab_size() == 258);
}

TEST_CASE("bpe: a malformed tokenizer.json is one UserError line naming the file and fault") {
  test::TempDir dir("bpe_malformed");
  json good = tokenizer_json({{"a", "b"}});
  auto with = [&](const char* pointer, json value) {
    json file = good;
    file[json::json_pointer(pointer)] = std::move(value);
    return file.dump();
  };
  json no_model = good;
  no_model.erase("model");
  std::vector<std::pair<std::string, std::string>> cases = {
      {"{\"model\": ", "not valid JSON"},
      {"[1, 2]", "not a JSON object"},
      {no_model.dump(), "\"model\" is missing"},
      {with("/model/type", "WordPiece"), "model.type is \"WordPiece\""},
      {with("/model/merges/0", json::array({"a", "qq"})), "model.merges[0] refers to \"qq\""},
      {with("/model/merges/0", "a b c"), "model.merges[0]"},
      {with("/model/vocab/a", -3), "model.vocab[\"a\"]"},
      {with("/pre_tokenizer", {{"type", "Whitespace"}}), "\"Whitespace\" is not supported"},
      {with("/pre_tokenizer", {{"type", "Split"}, {"pattern", {{"Regex", "(a"}}},
                               {"behavior", "Isolated"}}),
       "does not compile"},
      {with("/normalizer", {{"type", "NFD"}}), "normalizer \"NFD\" is not supported"},
      {with("/normalizer", {{"type", "Sequence"},
                            {"normalizers", {{{"type", "NFC"}}, {{"type", "Lowercase"}}}}}),
       "normalizer \"Lowercase\" is not supported"},
      {with("/decoder", nullptr), "ByteLevel decoder"},
      {with("/model/byte_fallback", true), "byte_fallback"},
      {with("/added_tokens", {{{"id", "x"}, {"content", "<s>"}}}), "added_tokens[0].id"},
      {with("/post_processor", {{"type", "Precompiled"}}), "post_processor type"},
  };
  for (const auto& test_case : cases) {  // no structured binding: INFO captures it (clang 14)
    const auto& [text, wanted] = test_case;
    std::string message = load_error(dir, text);
    INFO(test_case.first.substr(0, 120));
    CHECK(message.find(dir.str("tokenizer.json")) == 0);
    CHECK(message.find(wanted) != std::string::npos);
    CHECK(message.find('\n') == std::string::npos);
  }
  CHECK(load_error(dir, good.dump()).empty());
  CHECK_THROWS_WITH_AS(BpeTokenizer(dir.str("missing.json")),
                       doctest::Contains("cannot open"), UserError);
}

TEST_CASE("bpe: training merges the most frequent pair first and writes HF's layout") {
  test::TempDir dir("bpe_train_layout");
  {
    std::ofstream corpus(dir.str("corpus.txt"));
    corpus << "xyz";
    for (int i = 0; i < 40; ++i) corpus << " xyz";
    corpus << "<|endoftext|>";
  }
  BpeTrainOptions options;
  options.inputs = {dir.str("corpus.txt")};
  options.out_path = dir.str("tokenizer.json");
  options.vocab_size = 1 + 256 + 10;
  BpeTrainStats stats = train_bpe(options);
  // Pieces "xyz" once and " xyz" 40 times: (x,y) and (y,z) tie at 41, x has the smaller id;
  // then (xy,z) at 41, then (Ġ,xyz) at 40; no pair is left after that.
  CHECK(stats.merges == 3);
  CHECK(stats.vocab_size == 1 + 256 + 3);
  json file = json::parse(std::ifstream(options.out_path));
  CHECK(file["model"]["merges"] ==
        json::array({{"x", "y"}, {"xy", "z"}, {spell(" "), "xyz"}}));
  CHECK(file["model"]["vocab"]["<|endoftext|>"] == 0);
  CHECK(file["model"]["vocab"]["!"] == 1);  // the byte alphabet in code point order
  CHECK(file["added_tokens"][0]["content"] == "<|endoftext|>");
  CHECK(file["added_tokens"][0]["special"] == true);
  CHECK(file["pre_tokenizer"]["type"] == "ByteLevel");
  CHECK(file["decoder"]["type"] == "ByteLevel");
  BpeTokenizer tokenizer(options.out_path);
  CHECK(tokenizer.encode(" xyz xyz<|endoftext|>", AddSpecialTokens::kNo) == Ids{259, 259, 0});
  CHECK(tokenizer.eos_id() == 0);

  options.min_frequency = 42;  // no pair is that frequent
  CHECK(train_bpe(options).merges == 0);
  options.vocab_size = 100;
  CHECK_THROWS_WITH_AS(train_bpe(options), doctest::Contains("--vocab-size 100"), UserError);
  options.vocab_size = 300;
  options.bos_token = "<s>";
  CHECK_THROWS_WITH_AS(train_bpe(options), doctest::Contains("--bos-token"), UserError);
  options.bos_token.clear();
  options.pattern = "(unclosed";
  CHECK_THROWS_WITH_AS(train_bpe(options), doctest::Contains("--pattern"), UserError);
}

TEST_CASE("bpe: decode(encode(x)) == x on random bytes, and encode_batch matches encode") {
  test::TempDir dir("bpe_round_trip");
  std::mt19937 rng(7);
  const std::vector<std::string> words = {
      "the", "model", " token", "naïve", "Straße", "中文", "日本語", "русский", "😀", "🇫🇷",
      "  ", "\n", "\t", "123", "4567", "it's", "don't", "x += 1;", "العربية", "हिन्दी"};
  {
    std::ofstream corpus(dir.str("corpus.txt"));
    for (int i = 0; i < 20000; ++i)
      corpus << words[rng() % words.size()] << (rng() % 3 ? " " : "");
  }
  const char* llama3 = R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|)"
                       R"( ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  for (const char* pattern : {"", llama3}) {
    BpeTrainOptions options;
    options.inputs = {dir.str("corpus.txt")};
    options.out_path = dir.str("tokenizer.json");
    options.vocab_size = 500;
    options.pattern = pattern;
    train_bpe(options);
    BpeTokenizer tokenizer(options.out_path);
    std::vector<std::string> texts;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(1500);
    while (std::chrono::steady_clock::now() < deadline && texts.size() < 20000) {
      std::string text;
      for (size_t n = rng() % 40; n > 0; --n) {
        if (rng() % 2) text += static_cast<char>(rng() % 256);
        else text += words[rng() % words.size()];
      }
      std::vector<int32_t> ids = tokenizer.encode(text, AddSpecialTokens::kNo);
      REQUIRE(tokenizer.decode(ids) == text);
      texts.push_back(std::move(text));
    }
    CHECK(texts.size() > 100);
    auto batch = tokenizer.encode_batch(texts, AddSpecialTokens::kYes, 3);
    REQUIRE(batch.size() == texts.size());
    for (size_t i = 0; i < texts.size(); ++i)
      CHECK(batch[i] == tokenizer.encode(texts[i], AddSpecialTokens::kYes));
  }
}
