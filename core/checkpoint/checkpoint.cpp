// Saving a checkpoint: stage, write, commit, point `latest` at it, prune older ones.
//
// The order is what makes a crash at any point harmless: rank files and the index are
// complete and fsynced before COMMITTED is written, COMMITTED before the directory takes
// its final name, and that before `latest` names it. A committed directory is un-committed
// (COMMITTED removed and synced) before it is deleted, so a crash mid-delete never leaves a
// half-deleted directory that looks loadable. Leaves out: gathering RankFileInfos across
// processes (the caller's process group does that; see checkpoint.h).
#include "core/checkpoint/checkpoint.h"

#include "core/checkpoint/durable_fs.h"
#include "core/checkpoint/index.h"
#include "core/checkpoint/layout.h"
#include "core/checkpoint/verify.h"
#include "core/error.h"
#include "core/fault.h"

#include <fmt/format.h>

#include <algorithm>

namespace sigma {
namespace fs = std::filesystem;
namespace {

void remove_step_dir(const fs::path& dir) {
  if (is_committed(dir)) remove_durably(dir / kCommittedFile);  // fsyncs `dir`
  fault::point("checkpoint.prune");
  remove_durably(dir);
}

// Keeps the newest `keep` committed checkpoints, counting the one just written first
// whatever its step (after a resume from an older step, it is the run's newest), and
// deletes leftovers of interrupted saves older than the newest committed checkpoint.
void prune(const fs::path& root, int64_t written_step, int64_t keep) {
  std::vector<StepDir> dirs = list_step_dirs(root);
  std::vector<StepDir> committed;
  for (const StepDir& dir : dirs)
    if (dir.committed) committed.push_back(dir);
  if (committed.empty()) return;
  int64_t newest_step = committed.back().step;
  std::stable_sort(committed.begin(), committed.end(), [&](const StepDir& a, const StepDir& b) {
    bool a_written = a.step == written_step;
    bool b_written = b.step == written_step;
    return a_written != b_written ? a_written : a.step > b.step;
  });
  if (keep > 0 && committed.size() > size_t(keep)) {
    size_t spare = checkpoint_to_spare(committed, size_t(keep));  // the last intact one
    for (size_t i = size_t(keep); i < committed.size(); ++i)
      if (i != spare) remove_step_dir(committed[i].path);
  }
  for (const StepDir& dir : dirs) {
    if (dir.committed) continue;
    bool stale = dir.kind == StepDirKind::kLeftover ? dir.step <= newest_step
                                                    : dir.step < newest_step;
    if (stale) remove_step_dir(dir.path);
  }
}

}  // namespace

std::string prepare_checkpoint_dir(const std::string& root, int64_t step) {
  SIGMA_CHECK(step >= 0, "step {}", step);
  fs::path root_path(root);
  create_directory_durably(root_path);
  fs::path final_dir = root_path / step_dir_name(step);
  // Re-saving a committed step writes beside it; an uncommitted one is a crashed attempt.
  fs::path staging = is_committed(final_dir) ? root_path / leftover_dir_name(step, "tmp")
                                             : final_dir;
  remove_durably(staging);
  create_directory_durably(staging);
  return staging.string();
}

std::string commit_checkpoint(const std::string& dir, const SaveRequest& request,
                              const std::vector<RankFileInfo>& ranks) {
  SIGMA_CHECK(int(ranks.size()) == request.world_size, "{} rank files for world size {}",
              ranks.size(), request.world_size);
  SIGMA_CHECK(request.keep >= 0, "keep {}", request.keep);
  fs::path staging = fs::path(dir).lexically_normal();
  fs::path root(request.root);
  fs::path final_dir = (root / step_dir_name(request.step)).lexically_normal();

  write_index((staging / kIndexFile).string(), request.step, request.recipe_toml, ranks);
  fault::point("checkpoint.index");
  FileDigest index = digest_file((staging / kIndexFile).string());
  write_file_durably(staging / kCommittedFile,
                     committed_text(request.step, request.world_size, index));
  fsync_path(staging);
  fault::point("checkpoint.committed");
  if (staging != final_dir) {
    fs::path former = replace_directory(staging, final_dir,
                                        root / leftover_dir_name(request.step, "old"));
    remove_step_dir(former);
  }
  replace_file_atomically(root / kLatestFile, step_dir_name(request.step) + "\n");
  fault::point("checkpoint.latest");
  prune(root, request.step, request.keep);
  return final_dir.string();
}

std::string save_checkpoint(const SaveRequest& request) {
  SIGMA_CHECK(request.rank == 0 && request.world_size == 1,
              "save_checkpoint is single-process (rank {} of {}); use the three steps",
              request.rank, request.world_size);
  std::string dir = prepare_checkpoint_dir(request.root, request.step);
  RankFileInfo info = write_rank_file(dir, request);
  return commit_checkpoint(dir, request, {info});
}

}  // namespace sigma
