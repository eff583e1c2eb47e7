// Checkpoints that never lie: the seal over index.h5, verification and the fallback search of
// --resume auto, pruning that spares the last intact checkpoint, and the background writer.
#include "core/checkpoint/async_writer.h"
#include "core/checkpoint/checkpoint.h"
#include "core/checkpoint/verify.h"
#include "core/dist/single_group.h"
#include "core/error.h"
#include "temp_dir.h"

#include <doctest/doctest.h>
#include <fmt/format.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

using namespace sigma;
namespace fs = std::filesystem;

namespace {

// One tensor "model/w" [2, 3] whose values depend on `step`.
struct Small {
  std::vector<float> values;
  SaveRequest request;
  Small(const std::string& root, int64_t step, int64_t keep) : values(6) {
    for (size_t i = 0; i < values.size(); ++i) values[i] = float(step) + 0.5f * float(i);
    request.root = root;
    request.step = step;
    request.keep = keep;
    request.recipe_toml = "[run]\n";
    request.state.ints = {{"step", step}};
    request.tensors = {{"model/w", Tensor{values.data(), Shape{2, 3}}, Shape{2, 3}, 0}};
  }
};

std::string save_small(const std::string& root, int64_t step, int64_t keep = 0) {
  Small small(root, step, keep);
  return save_checkpoint(small.request);
}

void flip_byte(const std::string& path) {
  std::fstream file(path, std::ios::in | std::ios::out | std::ios::binary);
  std::streamoff offset = std::streamoff(fs::file_size(path) / 2);
  file.seekg(offset);
  char byte = 0;
  file.get(byte);
  file.seekp(offset);
  file.put(char(byte ^ 0x5A));
}

std::vector<float> load_w(const std::string& dir) {
  std::vector<float> values(6);
  std::vector<CheckpointTensor> into = {
      {"model/w", Tensor{values.data(), Shape{2, 3}}, Shape{2, 3}, 0}};
  load_checkpoint(dir, into);
  return values;
}

}  // namespace

TEST_CASE("checkpoint: COMMITTED seals index.h5, so a flipped byte there never reaches HDF5") {
  test::TempDir tmp("ckpt_seal");
  std::string dir = save_small(tmp.str("ckpt"), 4);
  std::ifstream seal(dir + "/COMMITTED");
  std::string text((std::istreambuf_iterator<char>(seal)), std::istreambuf_iterator<char>());
  CHECK(text.starts_with("step 4\nworld_size 1\nindex_bytes "));
  CHECK(text.find("\nindex_crc32 0x") != std::string::npos);
  CHECK(verify_checkpoint(dir).empty());

  flip_byte(dir + "/index.h5");
  std::string expected = dir + "/index.h5: checksum mismatch (expected ";
  CHECK_THROWS_WITH_AS(load_w(dir), doctest::Contains(expected.c_str()), UserError);
  CHECK(verify_checkpoint(dir).starts_with(expected));

  std::ofstream(dir + "/COMMITTED") << "step 4\nworld_size 1\n";  // an unsealed index
  CHECK_THROWS_WITH_AS(load_w(dir), doctest::Contains("COMMITTED: no 'index_bytes' line"),
                       UserError);
  std::ofstream(dir + "/COMMITTED") << "index_bytes 12x\nindex_crc32 0x1\n";
  CHECK_THROWS_WITH_AS(load_w(dir), doctest::Contains("'index_bytes 12x' is not a number"),
                       UserError);
}

TEST_CASE("checkpoint: the resume search skips a damaged checkpoint for the previous one") {
  test::TempDir tmp("ckpt_fallback");
  std::string root = tmp.str("ckpt");
  std::string first = save_small(root, 1), second = save_small(root, 2),
              third = save_small(root, 3);
  std::vector<std::string> skipped;
  auto note = [&](const std::string& dir, const std::string& reason) {
    skipped.push_back(dir + " | " + reason);
  };
  CHECK(find_verified_checkpoint(root, note) == third);
  CHECK(skipped.empty());

  flip_byte(third + "/rank_00000.h5");
  fs::remove(second + "/rank_00000.h5");
  CHECK(find_verified_checkpoint(root, note) == first);
  REQUIRE(skipped.size() == 2);
  CHECK(skipped[0].starts_with(third + " | " + third + "/rank_00000.h5: checksum mismatch"));
  CHECK(skipped[1].find("rank_00000.h5: missing") != std::string::npos);
  CHECK(load_w(first)[0] == 1.0f);

  flip_byte(first + "/index.h5");
  skipped.clear();
  CHECK(find_verified_checkpoint(root, note).empty());
  CHECK(skipped.size() == 3);
  CHECK(find_verified_checkpoint(tmp.str("none"), note).empty());
}

TEST_CASE("checkpoint: keep never deletes the only checkpoint that verifies") {
  test::TempDir tmp("ckpt_spare");
  std::string root = tmp.str("ckpt");
  std::string intact = save_small(root, 1);
  // Step 2 is damaged between its write and its commit: the index vouches for bytes that
  // are no longer there, so it is committed but fails verification.
  Small small(root, 2, 1);
  std::string staging = prepare_checkpoint_dir(root, 2);
  RankFileInfo info = write_rank_file(staging, small.request);
  flip_byte(staging + "/rank_00000.h5");
  std::string damaged = commit_checkpoint(staging, small.request, {info});
  CHECK(fs::exists(intact + "/COMMITTED"));  // keep = 1, but it is the only intact one
  CHECK(fs::exists(damaged + "/COMMITTED"));
  // An intact newer one releases it.
  std::string newest = save_small(root, 3, 1);
  CHECK(!fs::exists(intact));
  CHECK(!fs::exists(damaged));
  CHECK(fs::exists(newest + "/COMMITTED"));
}

TEST_CASE("checkpoint: the background writer saves a snapshot while the caller goes on") {
  for (bool async : {true, false}) {
    CAPTURE(async);
    test::TempDir tmp("ckpt_writer");
    SingleGroup one_process(Device::kCpu);
    CheckpointWriter writer(async, one_process);
    Small small(tmp.str("ckpt"), 5, 2);
    std::vector<float> saved = small.values;
    writer.save(small.request);
    std::fill(small.values.begin(), small.values.end(), -1.0f);  // training goes on
    std::optional<SaveOutcome> done = writer.wait();
    REQUIRE(done);
    CHECK(!done->error);
    CHECK(done->step == 5);
    CHECK(done->dir == tmp.str("ckpt/step_00000005"));
    CHECK(load_w(done->dir) == saved);
    CHECK(!writer.poll());  // an outcome is given once

    // A failed write reports why; the earlier checkpoint stays as it was.
    std::ofstream(tmp.str("blocked")) << "a file where the checkpoints should go";
    Small again(tmp.str("blocked"), 6, 2);
    writer.save(again.request);
    done = writer.wait();
    REQUIRE(done);
    REQUIRE(done->error);
    CHECK(done->dir.empty());
    CHECK_THROWS_WITH_AS(std::rethrow_exception(done->error),
                         doctest::Contains("cannot create directory"), UserError);
    CHECK(verify_checkpoint(tmp.str("ckpt/step_00000005")).empty());
  }
}
