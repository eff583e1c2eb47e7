// Data: the MMIDIDX format byte for byte, corrupt files, the byte tokenizer, the loader's
// windows, shuffling, resume and blending, the validation split, and `data prepare` (input
// kinds, thread-count independence, bounded memory, BPE documents read back).
#include "core/data/bpe_tokenizer.h"
#include "core/data/bpe_trainer.h"
#include "core/data/indexed_dataset.h"
#include "core/data/loader.h"
#include "core/data/prepare.h"
#include "core/data/tokenizer.h"
#include "core/error.h"
#include "temp_dir.h"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <string>
#include <vector>

using namespace sigma;
namespace fs = std::filesystem;

namespace {

using Documents = std::vector<std::vector<int32_t>>;

void write_dataset(const std::string& prefix, const Documents& docs, int64_t vocab_size) {
  IndexedDatasetWriter writer(prefix, vocab_size);
  for (const auto& doc : docs) writer.add_document(doc);
  writer.finish();
}

// Documents whose tokens are all distinct (base, base + 1, ...), so a token names its place.
Documents distinct_documents(const std::vector<int>& lengths, int32_t base) {
  Documents docs;
  for (int length : lengths) {
    docs.emplace_back();
    for (int k = 0; k < length; ++k) docs.back().push_back(base++);
  }
  return docs;
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

template <typename T>
void append(std::string& bytes, T value) {
  bytes.append(reinterpret_cast<const char*>(&value), sizeof(T));
}

// An .idx built by hand from the format description, independent of the writer.
std::string idx_bytes(uint8_t dtype, const std::vector<int32_t>& lengths,
                      const std::vector<int64_t>& pointers, const std::vector<int64_t>& docs) {
  std::string bytes("MMIDIDX\0\0", 9);
  append<uint64_t>(bytes, 1);
  append<uint8_t>(bytes, dtype);
  append<uint64_t>(bytes, lengths.size());
  append<uint64_t>(bytes, docs.size());
  for (int32_t v : lengths) append(bytes, v);
  for (int64_t v : pointers) append(bytes, v);
  for (int64_t v : docs) append(bytes, v);
  return bytes;
}

// The process's peak resident memory since the last reset (Linux: VmHWM, reset through
// /proc/self/clear_refs), in bytes; -1 where it cannot be read.
#ifdef SIGMA_SANITIZE
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif
int64_t reset_peak_rss() { return std::ofstream("/proc/self/clear_refs") << "5" ? 0 : -1; }
int64_t peak_rss() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);)
    if (line.starts_with("VmHWM:")) return std::stoll(line.substr(6)) * 1024;
  return -1;
}

std::string json_line(const std::string& text) {
  return nlohmann::json({{"text", text}}).dump() + "\n";
}

std::vector<int32_t> read_document(const IndexedDataset& data, int64_t d) {
  std::vector<int32_t> tokens(size_t(data.document_length(d)));
  data.read_document(d, 0, int64_t(tokens.size()), tokens.data());
  return tokens;
}

DataConfig config_for(std::vector<DataSource> sources, int64_t seq_len, bool shuffle,
                      double valid_fraction = 0) {
  DataConfig config;
  config.sources = std::move(sources);
  config.seq_len = seq_len;
  config.shuffle = shuffle;
  config.valid_fraction = valid_fraction;
  return config;
}

// Samples as whole windows of seq_len + 1 tokens (the inputs plus the last target).
std::vector<std::vector<int32_t>> take_samples(DataLoader& loader, int64_t count, int64_t seq_len,
                                               int64_t batch = 1) {
  std::vector<std::vector<int32_t>> samples;
  std::vector<int32_t> tokens(size_t(batch * seq_len)), targets(tokens.size());
  while (int64_t(samples.size()) < count) {
    loader.next(batch, tokens.data(), targets.data());
    for (int64_t b = 0; b < batch; ++b) {
      const int32_t* x = tokens.data() + b * seq_len;
      const int32_t* y = targets.data() + b * seq_len;
      CHECK(std::equal(x + 1, x + seq_len, y));  // targets are the inputs shifted by one
      std::vector<int32_t> window(x, x + seq_len);
      window.push_back(y[seq_len - 1]);
      samples.push_back(std::move(window));
    }
  }
  samples.resize(size_t(count));
  return samples;
}

}  // namespace

TEST_CASE("data: the byte tokenizer maps bytes to ids and 256 to end of document") {
  auto tokenizer = make_tokenizer("byte");
  CHECK(tokenizer->vocab_size() == 257);
  CHECK(tokenizer->eos_id() == 256);
  std::string text = "h\xC3\xA9\n\x01\xFF";
  std::vector<int32_t> ids = tokenizer->encode(text);
  CHECK(ids == std::vector<int32_t>{'h', 0xC3, 0xA9, '\n', 1, 255});
  ids.push_back(256);
  CHECK(tokenizer->decode(ids) == text);
  CHECK_THROWS_WITH_AS(make_tokenizer("gpt2.json"),
                       "tokenizer 'gpt2.json': not \"byte\" and not a tokenizer.json file",
                       UserError);
}

TEST_CASE("data: the writer's .bin and .idx match the MMIDIDX layout byte for byte") {
  test::TempDir tmp("data_layout");
  write_dataset(tmp.str("x"), {{1, 2, 3}, {300, 65535}}, 65536);
  CHECK(read_bytes(tmp.str("x.idx")) == idx_bytes(8, {3, 2}, {0, 6}, {0, 1, 2}));
  CHECK(read_bytes(tmp.str("x.bin")) == std::string("\1\0\2\0\3\0\x2C\1\xFF\xFF", 10));
  CHECK(!fs::exists(tmp.str("x.idx.tmp")));

  write_dataset(tmp.str("y"), {{70000}, {1, 2}}, 70001);  // past u16: i32, code 4
  CHECK(read_bytes(tmp.str("y.idx")) == idx_bytes(4, {1, 2}, {0, 4}, {0, 1, 2}));
  CHECK(read_bytes(tmp.str("y.bin")) == std::string("\x70\x11\1\0\1\0\0\0\2\0\0\0", 12));
}

TEST_CASE("data: datasets round-trip document for document, u16 and i32") {
  test::TempDir tmp("data_roundtrip");
  for (int64_t vocab : {257, 65536, 1 << 20}) {
    Documents docs;
    uint32_t state = 12345;
    for (int d = 0; d < 40; ++d) {
      docs.emplace_back();
      for (int k = 0; k < d * 7 % 23; ++k) {  // includes empty documents
        state = state * 1664525u + 1013904223u;
        docs.back().push_back(int32_t(state % uint32_t(vocab)));
      }
    }
    std::string prefix = tmp.str(fmt::format("v{}", vocab));
    write_dataset(prefix, docs, vocab);
    IndexedDataset data(prefix);
    REQUIRE(data.num_documents() == 40);
    CHECK(data.num_sequences() == 40);
    int64_t total = 0;
    for (int d = 0; d < 40; ++d) {
      CHECK(read_document(data, d) == docs[d]);
      total += int64_t(docs[d].size());
    }
    CHECK(data.num_tokens() == total);
    CHECK(fs::file_size(prefix + ".bin") == size_t(total) * (vocab <= 65536 ? 2 : 4));
  }
}

TEST_CASE("data: a Megatron dataset with several sequences per document reads across them") {
  test::TempDir tmp("data_megatron");
  // Three i16 sequences, two documents: [[5, 6], [7]] and [[-1, 9, 10]].
  write_bytes(tmp.str("m.idx"), idx_bytes(3, {2, 1, 3}, {0, 4, 6}, {0, 2, 3}));
  write_bytes(tmp.str("m.bin"), std::string("\5\0\6\0\7\0\xFF\xFF\x09\0\x0A\0", 12));
  IndexedDataset data(tmp.str("m"));
  CHECK(data.num_documents() == 2);
  CHECK(data.num_sequences() == 3);
  CHECK(data.num_tokens() == 6);
  CHECK(read_document(data, 0) == std::vector<int32_t>{5, 6, 7});
  CHECK(read_document(data, 1) == std::vector<int32_t>{-1, 9, 10});
  std::vector<int32_t> middle(2);
  data.read_document(0, 1, 2, middle.data());
  CHECK(middle == std::vector<int32_t>{6, 7});
}

TEST_CASE("data: a corrupt or missing dataset is a UserError naming the file") {
  test::TempDir tmp("data_corrupt");
  std::string good = idx_bytes(8, {3, 2}, {0, 6}, {0, 1, 2});
  std::string bin("\1\0\2\0\3\0\4\0\5\0", 10);
  auto expect = [&](const std::string& idx, const std::string& bin_bytes, const std::string& what) {
    write_bytes(tmp.str("x.idx"), idx);
    write_bytes(tmp.str("x.bin"), bin_bytes);
    CHECK_THROWS_WITH_AS(IndexedDataset(tmp.str("x")), doctest::Contains(what.c_str()), UserError);
  };
  std::string idx_path = tmp.str("x.idx");
  write_bytes(tmp.str("x.idx"), good);
  write_bytes(tmp.str("x.bin"), bin);
  CHECK_NOTHROW(IndexedDataset(tmp.str("x")));  // the unbroken files load

  std::string bad_magic = good;
  bad_magic[0] = 'N';
  expect(bad_magic, bin, idx_path + ": not a Megatron indexed dataset index (bad magic)");
  expect(good.substr(0, 40), bin, idx_path + ": truncated: header says 2 sequences");
  expect(good.substr(0, 20), bin, idx_path + ": truncated");
  std::string bad_version = good;
  bad_version[9] = 2;
  expect(bad_version, bin, idx_path + ": format version 2");
  std::string float_dtype = good;
  float_dtype[17] = 7;
  expect(float_dtype, bin, idx_path + ": dtype code 7");
  expect(good + "x", bin, idx_path + ": 83 bytes");
  expect(good, bin.substr(0, 9), idx_path + ": sequence 1 (2 tokens at byte 6) runs past the end");
  expect(idx_bytes(8, {3, 2}, {0, 6}, {0, 2, 1}), bin, idx_path + ": document index 2 is 1");
  expect(idx_bytes(8, {3, 2}, {0, 6}, {0, 1}), bin, idx_path + ": document indices end at");

  fs::remove(tmp.str("x.bin"));
  CHECK_THROWS_WITH_AS(IndexedDataset(tmp.str("x")),
                       fmt::format("data source {0}: {0}.bin not found", tmp.str("x")).c_str(),
                       UserError);
  fs::remove(tmp.str("x.idx"));
  CHECK_THROWS_WITH_AS(IndexedDataset(tmp.str("x")),
                       fmt::format("data source {0}: {0}.idx not found", tmp.str("x")).c_str(),
                       UserError);
}

TEST_CASE("loader: unshuffled samples are the stream's windows in file order") {
  test::TempDir tmp("loader_windows");
  Documents docs = distinct_documents({5, 1, 9, 3, 12}, 100);
  write_dataset(tmp.str("a"), docs, 257);
  std::vector<int32_t> stream;
  for (const auto& doc : docs) stream.insert(stream.end(), doc.begin(), doc.end());

  const int64_t seq_len = 4;
  DataLoader loader(config_for({{tmp.str("a"), 1.0}}, seq_len, false), Split::kTrain, 7);
  REQUIRE(loader.samples_per_epoch() == (int64_t(stream.size()) - 1) / seq_len);
  int64_t per_epoch = loader.samples_per_epoch();
  auto samples = take_samples(loader, 2 * per_epoch + 2, seq_len, 3);
  for (int64_t i = 0; i < int64_t(samples.size()); ++i) {
    int64_t k = i % per_epoch;  // epochs repeat in the same order
    std::vector<int32_t> window(stream.begin() + k * seq_len,
                                stream.begin() + k * seq_len + seq_len + 1);
    CHECK(samples[size_t(i)] == window);
  }
  CHECK(loader.position() == (int64_t(samples.size()) + 2) / 3 * 3);  // whole batches of 3
}

TEST_CASE("loader: shuffling is seeded, covers every sample once per epoch, and reshuffles") {
  test::TempDir tmp("loader_shuffle");
  const int64_t seq_len = 8;
  // 401 distinct tokens = 50 samples * 8 + 1, so an epoch's inputs are every token but the
  // stream's last, exactly once, whatever the document order.
  std::vector<int> lengths;
  for (int d = 0, left = 401; left > 0; ++d)
    left -= lengths.emplace_back(std::min(left, 3 + d % 11));
  write_dataset(tmp.str("a"), distinct_documents(lengths, 0), 1000);
  DataConfig config = config_for({{tmp.str("a"), 1.0}}, seq_len, true);

  DataLoader loader(config, Split::kTrain, 1), same(config, Split::kTrain, 1),
      other(config, Split::kTrain, 2);
  REQUIRE(loader.samples_per_epoch() == 50);
  auto samples = take_samples(loader, 100, seq_len, 4);
  CHECK(samples == take_samples(same, 100, seq_len, 5));
  CHECK(samples != take_samples(other, 100, seq_len, 4));
  for (int epoch = 0; epoch < 2; ++epoch) {
    std::multiset<int32_t> inputs;
    int chained = 0;  // consecutive samples that continue each other, as in file order
    for (int i = epoch * 50; i < epoch * 50 + 50; ++i) {
      inputs.insert(samples[i].begin(), samples[i].end() - 1);
      if (i > epoch * 50 && samples[i].front() == samples[i - 1].back()) ++chained;
    }
    CHECK(inputs.size() == 400);
    CHECK(std::set<int32_t>(inputs.begin(), inputs.end()).size() == 400);
    CHECK(chained < 10);
  }
  CHECK(std::vector(samples.begin(), samples.begin() + 50) !=
        std::vector(samples.begin() + 50, samples.end()));
}

TEST_CASE("loader: set_position resumes exactly where an uninterrupted loader would be") {
  test::TempDir tmp("loader_resume");
  write_dataset(tmp.str("a"), distinct_documents({30, 7, 19, 40, 11}, 0), 1000);
  write_dataset(tmp.str("b"), distinct_documents({13, 50, 9}, 500), 1000);
  DataConfig config = config_for({{tmp.str("a"), 2.0}, {tmp.str("b"), 1.0}}, 6, true);
  DataLoader straight(config, Split::kTrain, 3);
  auto expected = take_samples(straight, 80, 6, 4);
  for (int64_t k : {0, 1, 17, 45, 79}) {
    DataLoader resumed(config, Split::kTrain, 3);
    resumed.set_position(k);
    CHECK(resumed.position() == k);
    auto rest = take_samples(resumed, 80 - k, 6, 3);
    CHECK(rest == std::vector(expected.begin() + k, expected.end()));
  }
  straight.set_position(5);  // backwards, as the evaluator does
  CHECK(take_samples(straight, 3, 6) == std::vector(expected.begin() + 5, expected.begin() + 8));
  CHECK_THROWS_AS(straight.set_position(-1), UserError);
}

TEST_CASE("loader: blending follows the weights exactly") {
  test::TempDir tmp("loader_blend");
  std::vector<DataSource> sources;
  for (int s = 0; s < 3; ++s) {
    sources.push_back({tmp.str(fmt::format("s{}", s)), std::vector<double>{5, 3, 2}[s]});
    write_dataset(sources.back().path, distinct_documents({100, 60, 80}, s * 1000), 4000);
  }
  DataLoader loader(config_for(sources, 5, true), Split::kTrain, 11);
  auto samples = take_samples(loader, 1000, 5, 8);
  std::vector<int64_t> counts(3, 0);
  for (size_t i = 0; i < samples.size(); ++i) {
    int s = samples[i].front() / 1000;
    CHECK(samples[i].back() / 1000 == s);  // never mixes sources within a sample
    ++counts[s];
    for (int d = 0; d < 3; ++d)  // at every prefix, each count is within one of its share
      CHECK(std::abs(double(counts[d]) - sources[d].weight / 10 * double(i + 1)) < 1.0);
  }
  CHECK(counts == std::vector<int64_t>{500, 300, 200});
}

TEST_CASE("loader: the validation split holds out the last documents, disjoint from training") {
  test::TempDir tmp("loader_valid");
  write_dataset(tmp.str("a"), distinct_documents({20, 20, 20, 20, 20, 20, 20, 20, 15, 25}, 0),
                1000);
  DataConfig config = config_for({{tmp.str("a"), 1.0}}, 4, true, 0.2);
  DataLoader train(config, Split::kTrain, 5), valid(config, Split::kValid, 5);
  CHECK(train.samples_per_epoch() == (160 - 1) / 4);
  CHECK(valid.samples_per_epoch() == (40 - 1) / 4);
  std::set<int32_t> train_tokens, valid_tokens;
  for (const auto& s : take_samples(train, train.samples_per_epoch(), 4, 2))
    train_tokens.insert(s.begin(), s.end());
  auto valid_samples = take_samples(valid, valid.samples_per_epoch(), 4, 2);
  for (const auto& s : valid_samples) valid_tokens.insert(s.begin(), s.end());
  CHECK(*train_tokens.rbegin() < 160);
  CHECK(*valid_tokens.begin() >= 160);
  // Validation is never shuffled: its windows are in file order, the same on every pass.
  CHECK(valid_samples.front() == std::vector<int32_t>{160, 161, 162, 163, 164});
  valid.set_position(0);
  CHECK(take_samples(valid, 1, 4) == std::vector(valid_samples.begin(), valid_samples.begin() + 1));

  std::string path = tmp.str("a");
  std::string too_few = fmt::format("data source {}: valid_fraction 0.05 of its 10 documents "
                                    "leaves 0 for validation",
                                    path);
  CHECK_THROWS_WITH_AS(DataLoader(config_for({{path, 1.0}}, 4, true, 0.05), Split::kTrain, 5),
                       doctest::Contains(too_few.c_str()), UserError);
  std::string too_short = fmt::format(
      "data source {}: its validation part has 40 tokens, fewer than seq_len + 1 = 41", path);
  CHECK_THROWS_WITH_AS(DataLoader(config_for({{path, 1.0}}, 40, true, 0.2), Split::kValid, 5),
                       too_short.c_str(), UserError);
  CHECK_THROWS_AS(DataLoader(config_for({{path, 1.0}}, 4, true, 0.0), Split::kValid, 5), UserError);
}

TEST_CASE("data: prepare reads directories, .gz and JSONL in order and skips binary files") {
  test::TempDir tmp("data_prepare");
  fs::create_directories(tmp.str("in/sub"));
  write_bytes(tmp.str("in/b.txt"), "bee\n");
  write_bytes(tmp.str("in/a.txt"), "ay");
  write_bytes(tmp.str("in/empty.txt"), "");
  write_bytes(tmp.str("in/image.png"), std::string("\x89PNG\0\0", 6));
  write_bytes(tmp.str("in/sub/c.jsonl"),
              "{\"text\": \"one\"}\n\n{\"body\": 1, \"text\": \"two\"}\n");
  write_bytes(tmp.str("gz.txt"), "zipped");
  REQUIRE(std::system(fmt::format("gzip -f '{}'", tmp.str("gz.txt")).c_str()) == 0);

  PrepareOptions options;
  options.inputs = {tmp.str("gz.txt.gz"), tmp.str("in")};
  options.out_prefix = tmp.str("out/ds");
  PrepareStats stats = prepare_dataset(options);
  CHECK(stats.documents == 5);
  CHECK(stats.skipped_files == 1);
  CHECK(stats.text_bytes == 6 + 2 + 4 + 3 + 3);
  CHECK(stats.tokens == stats.text_bytes + 5);
  IndexedDataset data(options.out_prefix);
  auto tokenizer = make_tokenizer("byte");
  std::vector<std::string> texts;
  for (int64_t d = 0; d < data.num_documents(); ++d) {
    std::vector<int32_t> tokens = read_document(data, d);
    CHECK(tokens.back() == 256);
    texts.push_back(tokenizer->decode(tokens));
  }
  CHECK(texts == std::vector<std::string>{"zipped", "ay", "bee\n", "one", "two"});

  write_bytes(tmp.str("bad.jsonl"), "{\"text\": \"ok\"}\n{\"text\": oops}\n");
  options.inputs = {tmp.str("bad.jsonl")};
  CHECK_THROWS_WITH_AS(prepare_dataset(options),
                       doctest::Contains((tmp.str("bad.jsonl") + ":2: malformed JSON").c_str()),
                       UserError);
  CHECK(!fs::exists(options.out_prefix + ".idx"));  // a failed prepare leaves no dataset
  options.jsonl_field = "body";
  options.inputs = {tmp.str("in/sub/c.jsonl")};
  std::string no_field = tmp.str("in/sub/c.jsonl") + ":1: no string field \"body\"";
  CHECK_THROWS_WITH_AS(prepare_dataset(options), doctest::Contains(no_field.c_str()), UserError);
  options.inputs = {tmp.str("no/such/file")};
  CHECK_THROWS_WITH_AS(prepare_dataset(options),
                       ("input " + tmp.str("no/such/file") + ": not found").c_str(), UserError);
}

TEST_CASE("data: prepare is byte-identical for 1 and 2 threads and holds a bounded batch queue") {
  test::TempDir tmp("data_prepare_threads");
  std::mt19937 rng(11);
  auto random_text = [&](size_t length) {
    std::string text;
    while (text.size() < length)
      text += "word" + std::to_string(rng() % 1000) + (rng() % 9 ? " " : "\n");
    return text;
  };
  // ~1.5 MB in all: a streamed JSONL (also gzipped) and many small files.
  fs::create_directories(tmp.str("in"));
  std::string jsonl;
  for (int i = 0; i < 1500; ++i) jsonl += json_line(random_text(1 + rng() % 700));
  write_bytes(tmp.str("in/a.jsonl"), jsonl);
  write_bytes(tmp.str("z.jsonl"), jsonl);
  REQUIRE(std::system(fmt::format("gzip -f '{}'", tmp.str("z.jsonl")).c_str()) == 0);
  for (int i = 0; i < 300; ++i)
    write_bytes(tmp.str(fmt::format("in/t{:03d}.txt", i)), random_text(900));

  PrepareOptions options;
  options.inputs = {tmp.str("in"), tmp.str("z.jsonl.gz")};
  options.batch_bytes = 16 << 10;
  options.max_batches_in_flight = 3;
  int64_t progress_calls = 0;
  options.on_progress = [&](const PrepareProgress& p) { progress_calls += p.done; };
  std::vector<std::string> outputs;
  for (int threads : {1, 2}) {
    options.num_threads = threads;
    options.out_prefix = tmp.str(fmt::format("out{}", threads));
    bool rss_known = reset_peak_rss() == 0 && peak_rss() > 0;
    int64_t rss_before = peak_rss();
    PrepareStats stats = prepare_dataset(options);
    // Threads' stacks, 1 MiB read buffers and the allocator's arenas come to a few MB; a
    // whole-input buffer or an oversized allocation per document would add tens.
    // (Not in the sanitizer build, whose shadow memory and quarantine dwarf these.)
    if (rss_known && !kSanitized) CHECK(peak_rss() - rss_before < (int64_t(12) << 20));
    CHECK(stats.documents == 1500 * 2 + 300);
    CHECK(stats.threads == threads);
    // The reader never gets more than the queue bound ahead of the writer: three batches,
    // each cut at the first document past 16 KiB (documents here are under 1 KiB).
    CHECK(stats.peak_buffered_bytes <= 3 * ((16 << 10) + 1024));
    CHECK(stats.peak_buffered_bytes * 20 < stats.text_bytes);
    outputs.push_back(read_bytes(options.out_prefix + ".bin") +
                      read_bytes(options.out_prefix + ".idx"));
  }
  CHECK(progress_calls == 2);  // one final report per run
  CHECK(outputs[0].size() > 1000000);
  CHECK(outputs[0] == outputs[1]);
}

TEST_CASE("data: prepare with a tokenizer.json writes BOS text EOS and reads back per document") {
  test::TempDir tmp("data_prepare_bpe");
  std::string corpus;
  for (int i = 0; i < 300; ++i)
    corpus += fmt::format("the token {} of the corpus, naïve 中文\n", i);
  write_bytes(tmp.str("corpus.txt"), corpus);
  const std::vector<std::string> texts = {"the corpus", "héllo\n\nworld 123", "x", "中文 token"};
  std::string jsonl;
  for (const std::string& text : texts) jsonl += json_line(text);
  write_bytes(tmp.str("docs.jsonl"), jsonl);

  const char* llama3 = R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|)"
                       R"( ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  for (bool with_bos : {false, true}) {
    BpeTrainOptions train;
    train.inputs = {tmp.str("corpus.txt")};
    train.out_path = tmp.str("tokenizer.json");
    train.vocab_size = 400;
    if (with_bos) {
      train.pattern = llama3;
      train.special_tokens = {"<|begin_of_text|>", "<|end_of_text|>"};
      train.bos_token = "<|begin_of_text|>";
    }
    train_bpe(train);
    BpeTokenizer tokenizer(train.out_path);
    int32_t eos = tokenizer.eos_id();

    PrepareOptions options;
    options.inputs = {tmp.str("docs.jsonl")};
    options.tokenizer = train.out_path;
    options.out_prefix = tmp.str("out/ds");
    PrepareStats stats = prepare_dataset(options);
    CHECK(stats.documents == int64_t(texts.size()));
    IndexedDataset data(options.out_prefix);
    REQUIRE(data.num_documents() == int64_t(texts.size()));
    for (int64_t d = 0; d < data.num_documents(); ++d) {
      std::vector<int32_t> tokens = read_document(data, d);
      std::vector<int32_t> want = tokenizer.encode(texts[d], AddSpecialTokens::kNo);
      if (with_bos) want.insert(want.begin(), *tokenizer.token_to_id("<|begin_of_text|>"));
      want.push_back(eos);
      CHECK(tokens == want);
      CHECK(tokenizer.decode(tokens) == texts[d]);
    }
  }
  write_bytes(tmp.str("broken.json"), "{\"model\": ");
  PrepareOptions options;
  options.inputs = {tmp.str("docs.jsonl")};
  options.tokenizer = tmp.str("broken.json");
  options.out_prefix = tmp.str("out/broken");
  CHECK_THROWS_WITH_AS(prepare_dataset(options), doctest::Contains("broken.json: not valid JSON"),
                       UserError);
  CHECK(!fs::exists(options.out_prefix + ".bin"));
}
