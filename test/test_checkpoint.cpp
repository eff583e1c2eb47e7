// Checkpoints: round trip, commit and latest, pruning, corruption, resharding reads.
#include "core/checkpoint/checkpoint.h"
#include "core/checkpoint/crc32.h"
#include "core/error.h"
#include "temp_dir.h"

#include <doctest/doctest.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

using namespace sigma;
namespace fs = std::filesystem;

namespace {

std::vector<float> ramp(int64_t n, float base) {
  std::vector<float> values(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) values[size_t(i)] = base + 0.25f * float(i);
  return values;
}

// Rows [row_offset, row_offset + shape[0]) of a tensor whose whole shape is `global`.
CheckpointTensor slice(const std::string& name, std::vector<float>& values, Shape global,
                       int64_t row_offset, int64_t rows) {
  Shape local = global;
  local.dims[0] = rows;
  SIGMA_CHECK(int64_t(values.size()) == local.numel(), "{} values", values.size());
  return {name, Tensor{values.data(), local}, global, row_offset};
}

CheckpointTensor whole(const std::string& name, std::vector<float>& values, Shape global) {
  return slice(name, values, global, 0, global[0]);
}

SaveRequest request(const std::string& root, int64_t step, int64_t keep = 0) {
  SaveRequest r;
  r.root = root;
  r.step = step;
  r.keep = keep;
  r.recipe_toml = fmt::format("[run]\nname = \"ckpt-test\"\nseed = {}\n", step);
  r.state.ints = {{"step", step}, {"tokens", step * 4096}};
  r.state.floats = {{"loss_scale", 0.5}};
  return r;
}

// One small tensor saved at `step`; returns the step directory.
std::string save_small(const std::string& root, int64_t step, int64_t keep = 0) {
  std::vector<float> values = ramp(6, float(step));
  SaveRequest r = request(root, step, keep);
  r.tensors = {whole("model/w", values, Shape{2, 3})};
  return save_checkpoint(r);
}

void flip_byte(const std::string& path, std::streamoff offset) {
  std::fstream file(path, std::ios::in | std::ios::out | std::ios::binary);
  file.seekg(offset);
  char byte = 0;
  file.get(byte);
  file.seekp(offset);
  file.put(char(byte ^ 0x5A));
}

}  // namespace

TEST_CASE("checkpoint: crc32 matches the IEEE check value, in one piece or several") {
  const char text[] = "123456789";
  CHECK(crc32_update(0, text, 9) == 0xCBF43926u);
  CHECK(crc32_update(crc32_update(0, text, 4), text + 4, 5) == 0xCBF43926u);
  CHECK(crc32_update(0, text, 0) == 0u);
}

TEST_CASE("checkpoint: save and load round trip tensors, state and recipe") {
  test::TempDir tmp("ckpt_roundtrip");
  std::vector<float> w = ramp(3 * 4, 1.0f), m = ramp(3 * 4, -2.0f), norm = ramp(4, 7.0f);
  std::vector<float> experts = ramp(2 * 3 * 2, 0.5f);
  SaveRequest r = request(tmp.str("ckpt"), 12);
  r.tensors = {whole("model/model.layers.0.self_attn.q_proj.weight", w, Shape{3, 4}),
               whole("optim/m/model.layers.0.self_attn.q_proj.weight", m, Shape{3, 4}),
               whole("model/model.norm.weight", norm, Shape{4}),
               whole("model/model.layers.0.mlp.experts.up_proj.weight", experts, Shape{2, 3, 2})};
  std::string dir = save_checkpoint(r);
  CHECK(dir == tmp.str("ckpt/step_00000012"));
  CHECK(fs::exists(tmp.str("ckpt/step_00000012/COMMITTED")));
  CHECK(fs::exists(tmp.str("ckpt/step_00000012/rank_00000.h5")));

  std::vector<float> w2(w.size()), m2(m.size()), norm2(norm.size()), experts2(experts.size());
  std::vector<CheckpointTensor> into = {
      whole("model/model.norm.weight", norm2, Shape{4}),
      whole("model/model.layers.0.self_attn.q_proj.weight", w2, Shape{3, 4}),
      whole("optim/m/model.layers.0.self_attn.q_proj.weight", m2, Shape{3, 4}),
      whole("model/model.layers.0.mlp.experts.up_proj.weight", experts2, Shape{2, 3, 2})};
  LoadedCheckpoint loaded = load_checkpoint(dir, into);
  CHECK(w2 == w);
  CHECK(m2 == m);
  CHECK(norm2 == norm);
  CHECK(experts2 == experts);
  CHECK(loaded.dir == dir);
  CHECK(loaded.step == 12);
  CHECK(loaded.recipe_toml == r.recipe_toml);
  CHECK(loaded.state.ints == r.state.ints);
  CHECK(loaded.state.floats == r.state.floats);

  // A slice of rows of a tensor saved whole: what a rank of a larger world asks for.
  std::vector<float> rows(4);
  std::vector<CheckpointTensor> part = {
      slice("model/model.layers.0.self_attn.q_proj.weight", rows, Shape{3, 4}, 2, 1)};
  load_checkpoint(dir, part);
  CHECK(rows == std::vector<float>(w.begin() + 8, w.end()));
}

TEST_CASE("checkpoint: latest names the newest committed step, and resolve accepts the root") {
  test::TempDir tmp("ckpt_latest");
  std::string root = tmp.str("ckpt");
  CHECK(find_latest_checkpoint(root).empty());
  save_small(root, 5);
  std::string newest = save_small(root, 10);
  std::ifstream latest(tmp.str("ckpt/latest"));
  std::string name;
  latest >> name;
  CHECK(name == "step_00000010");
  CHECK(!fs::exists(tmp.str("ckpt/latest.tmp")));
  CHECK(find_latest_checkpoint(root) == newest);
  CHECK(resolve_checkpoint(root) == newest);
  CHECK(resolve_checkpoint(tmp.str("ckpt/step_00000005")) == tmp.str("ckpt/step_00000005"));

  // A stale `latest` (its directory deleted by hand) falls back to scanning.
  fs::remove_all(newest);
  CHECK(find_latest_checkpoint(root) == tmp.str("ckpt/step_00000005"));
  CHECK_THROWS_WITH_AS(resolve_checkpoint(tmp.str("empty-nonexistent")),
                       doctest::Contains("no such checkpoint directory"), UserError);
  fs::create_directories(tmp.str("empty"));
  CHECK_THROWS_WITH_AS(resolve_checkpoint(tmp.str("empty")),
                       doctest::Contains("no committed checkpoint"), UserError);
}

TEST_CASE("checkpoint: keep prunes older checkpoints and stale uncommitted ones") {
  test::TempDir tmp("ckpt_keep");
  std::string root = tmp.str("ckpt");
  fs::create_directories(tmp.str("ckpt/step_00000000"));  // an interrupted save, older
  fs::create_directories(tmp.str("ckpt/step_00000001.tmp-999999"));
  for (int64_t step = 1; step <= 4; ++step) save_small(root, step, 2);
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(root))
    if (entry.is_directory()) names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  CHECK(names == std::vector<std::string>{"step_00000003", "step_00000004"});

  test::TempDir all("ckpt_keep_all");
  for (int64_t step = 1; step <= 3; ++step) save_small(all.str(), step, 0);
  for (int64_t step = 1; step <= 3; ++step)
    CHECK(fs::exists(all.path / fmt::format("step_{:08d}", step) / "COMMITTED"));
}

TEST_CASE("checkpoint: a directory without COMMITTED is never loaded") {
  test::TempDir tmp("ckpt_uncommitted");
  std::string root = tmp.str("ckpt");
  std::string committed = save_small(root, 3);
  std::string crashed = save_small(root, 7);
  fs::remove(fs::path(crashed) / "COMMITTED");
  CHECK(find_latest_checkpoint(root) == committed);  // `latest` names step 7: not committed
  CHECK_THROWS_WITH_AS(resolve_checkpoint(crashed),
                       (crashed + ": not a committed checkpoint (no COMMITTED file); it was "
                                  "probably interrupted while saving")
                           .c_str(),
                       UserError);
  std::vector<float> values(6);
  std::vector<CheckpointTensor> into = {whole("model/w", values, Shape{2, 3})};
  CHECK_THROWS_WITH_AS(load_checkpoint(crashed, into),
                       doctest::Contains("not a committed checkpoint"), UserError);
  // Saving that step again replaces the crashed attempt.
  std::string again = save_small(root, 7);
  CHECK(load_checkpoint(again, into).step == 7);
}

TEST_CASE("checkpoint: a flipped byte in a rank file is a checksum error naming the file") {
  test::TempDir tmp("ckpt_corrupt");
  std::string dir = save_small(tmp.str("ckpt"), 1);
  std::string rank_file = dir + "/rank_00000.h5";
  flip_byte(rank_file, std::streamoff(fs::file_size(rank_file) / 2));
  std::vector<float> values(6);
  std::vector<CheckpointTensor> into = {whole("model/w", values, Shape{2, 3})};
  CHECK_THROWS_WITH_AS(load_checkpoint(dir, into),
                       doctest::Contains((rank_file + ": checksum mismatch (expected ").c_str()),
                       UserError);
  fs::resize_file(rank_file, fs::file_size(rank_file) - 100);
  CHECK_THROWS_WITH_AS(load_checkpoint(dir, into), doctest::Contains((rank_file + ": ").c_str()),
                       UserError);
}

TEST_CASE("checkpoint: a shape mismatch names the tensor and both shapes") {
  test::TempDir tmp("ckpt_shape");
  std::string dir = save_small(tmp.str("ckpt"), 1);
  std::vector<float> values(8);
  std::vector<CheckpointTensor> into = {whole("model/w", values, Shape{2, 4})};
  CHECK_THROWS_WITH_AS(
      load_checkpoint(dir, into),
      (fmt::format("checkpoint {}: model/w has shape [2, 3] but the model needs [2, 4]", dir))
          .c_str(),
      UserError);
}

TEST_CASE("checkpoint: an unknown tensor is named") {
  test::TempDir tmp("ckpt_unknown");
  std::string dir = save_small(tmp.str("ckpt"), 1);
  std::vector<float> values(6);
  std::vector<CheckpointTensor> into = {whole("model/lm_head.weight", values, Shape{2, 3})};
  CHECK_THROWS_WITH_AS(load_checkpoint(dir, into),
                       (fmt::format("checkpoint {} has no tensor model/lm_head.weight", dir)).c_str(),
                       UserError);
}

TEST_CASE("checkpoint: rows spanning two rank files load (world size 2 read by 1 and by 3)") {
  test::TempDir tmp("ckpt_reshard");
  std::string root = tmp.str("ckpt");
  Shape global{5, 2};
  std::vector<float> all = ramp(10, 0.0f);
  std::vector<float> rank0(all.begin(), all.begin() + 6), rank1(all.begin() + 6, all.end());
  std::vector<float> norm = ramp(2, 3.0f), none;
  std::vector<RankFileInfo> infos;
  std::string dir = prepare_checkpoint_dir(root, 20);
  for (int rank = 0; rank < 2; ++rank) {
    SaveRequest r = request(root, 20);
    r.rank = rank;
    r.world_size = 2;
    r.state.ints["rank"] = rank;
    // Rows 0-2 on rank 0, 3-4 on rank 1; the replicated norm is saved by rank 0 alone.
    r.tensors = {rank == 0 ? slice("model/x", rank0, global, 0, 3)
                           : slice("model/x", rank1, global, 3, 2),
                 rank == 0 ? whole("model/norm", norm, Shape{2})
                           : slice("model/norm", none, Shape{2}, 2, 0)};
    infos.push_back(write_rank_file(dir, r));
  }
  SaveRequest r0 = request(root, 20);
  r0.world_size = 2;
  std::string committed = commit_checkpoint(dir, r0, infos);
  CHECK(committed == tmp.str("ckpt/step_00000020"));

  std::vector<float> whole_x(10), norm2(2);
  std::vector<CheckpointTensor> into = {whole("model/x", whole_x, global),
                                        whole("model/norm", norm2, Shape{2})};
  LoadedCheckpoint loaded = load_checkpoint(committed, into);
  CHECK(whole_x == all);
  CHECK(norm2 == norm);
  CHECK(loaded.state.ints.at("rank") == 0);

  // Rank 1 of a world of 3 holds rows 2-3: row 2 from rank file 0, row 3 from rank file 1.
  std::vector<float> middle(4);
  std::vector<CheckpointTensor> part = {slice("model/x", middle, global, 2, 2)};
  load_checkpoint(committed, part);
  CHECK(middle == std::vector<float>(all.begin() + 4, all.begin() + 8));
}

TEST_CASE("checkpoint: re-saving a committed step swaps in the new copy") {
  test::TempDir tmp("ckpt_resave");
  std::string root = tmp.str("ckpt");
  std::string first = save_small(root, 4);
  std::vector<float> values = ramp(6, 100.0f);
  SaveRequest r = request(root, 4);
  r.tensors = {whole("model/w", values, Shape{2, 3})};
  std::string staging = prepare_checkpoint_dir(root, 4);
  CHECK(staging != first);  // written beside the committed copy, which stays loadable
  CHECK(resolve_checkpoint(first) == first);
  std::string second = commit_checkpoint(staging, r, {write_rank_file(staging, r)});
  CHECK(second == first);
  CHECK(!fs::exists(staging));
  std::vector<float> loaded(6);
  std::vector<CheckpointTensor> into = {whole("model/w", loaded, Shape{2, 3})};
  load_checkpoint(second, into);
  CHECK(loaded == values);
  size_t entries = 0;
  for (const auto& entry : fs::directory_iterator(root)) entries += entry.is_directory();
  CHECK(entries == 1);
}

TEST_CASE("checkpoint: a truncated or missing index.h5 is a user error naming it") {
  test::TempDir tmp("ckpt_index");
  std::string dir = save_small(tmp.str("ckpt"), 2);
  std::string index = dir + "/index.h5";
  std::vector<float> values(6);
  std::vector<CheckpointTensor> into = {whole("model/w", values, Shape{2, 3})};
  fs::resize_file(index, fs::file_size(index) / 2);
  CHECK_THROWS_WITH_AS(load_checkpoint(dir, into), doctest::Contains((index + ": ").c_str()), UserError);
  fs::resize_file(index, 100);
  CHECK_THROWS_WITH_AS(load_checkpoint(dir, into), doctest::Contains((index + ": ").c_str()), UserError);
  fs::remove(index);
  CHECK_THROWS_WITH_AS(load_checkpoint(dir, into),
                       doctest::Contains((index + ": missing").c_str()), UserError);
}
