// Checkpoints: HDF5, one file per rank, an index, committed atomically (DESIGN.md, Contracts).
//
//   ROOT/step_00001000/
//     rank_00000.h5   /model/<name>, /optim/m/<name>, /optim/v/<name> (f32 slices),
//                     /state (attributes: step, tokens, seed, loader position, schedule state)
//     index.h5        format version, step, resolved recipe, world size, per tensor its
//                     global shape, dtype and which rank holds which rows; CRC32 per rank file
//     COMMITTED       written last, after every file is complete and synced
//   ROOT/latest       names the newest committed step directory
//
// A directory without COMMITTED is never loaded. Writing happens beside the older
// checkpoints, so a crash mid-save leaves the last committed one intact. The exact HDF5
// layout and the save/prune order are in core/checkpoint/README.md.
#pragma once

#include "core/tensor/tensor.h"

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace sigma {

// One tensor (or this rank's rows of it) to save or load. `name` includes its group,
// e.g. "model/model.layers.0.self_attn.q_proj.weight" or "optim/m/lm_head.weight".
struct CheckpointTensor {
  std::string name;
  Tensor data;          // this rank's rows, f32 on the host
  Shape global_shape;   // the whole tensor's shape
  int64_t row_offset = 0;  // first row (dim 0) of `data` within the whole tensor
};

// Scalars of the training state, stored as attributes of /state.
struct CheckpointState {
  std::map<std::string, int64_t> ints;
  std::map<std::string, double> floats;
};

struct SaveRequest {
  std::string root;          // the checkpoints directory
  int64_t step = 0;
  std::string recipe_toml;   // resolved recipe text
  int rank = 0;
  int world_size = 1;
  int64_t keep = 3;          // newest committed checkpoints kept, this one included; 0 keeps all
  std::vector<CheckpointTensor> tensors;
  CheckpointState state;
};

// Writes ROOT/step_<step>/, commits it, points ROOT/latest at it, prunes beyond `keep`.
// Returns the step directory. Single process (rank 0 of world size 1); a multi-rank save
// runs the three steps below instead.
std::string save_checkpoint(const SaveRequest& request);

// What one rank file holds: gathered to rank 0, which writes the index from it.
struct TensorSlice {
  std::string name;
  Shape global_shape;
  int64_t row_offset = 0;
  int64_t rows = 0;
};

struct RankFileInfo {
  int rank = 0;
  int64_t bytes = 0;    // the file's size
  uint32_t crc32 = 0;   // of the file's bytes, taken after it was closed and fsynced
  std::vector<TensorSlice> slices;
};

// save_checkpoint in three steps, for a multi-rank save:
//   rank 0:     dir = prepare_checkpoint_dir(root, step)   then share `dir` with every rank
//   every rank: info = write_rank_file(dir, request)       then gather the infos to rank 0
//   rank 0:     commit_checkpoint(dir, request, infos)     (infos in rank order)
// prepare returns ROOT/step_<step>, or a staging directory beside it when a committed
// one of that step exists (commit then swaps it in, so a committed copy exists throughout).
std::string prepare_checkpoint_dir(const std::string& root, int64_t step);
// Writes DIR/rank_<rank>.h5 (tensors with rows > 0, plus /state), closes and fsyncs it.
RankFileInfo write_rank_file(const std::string& dir, const SaveRequest& request);
// Writes index.h5 and COMMITTED, moves `dir` into place, updates ROOT/latest and prunes.
// Uses request.root, step, recipe_toml, world_size and keep; returns the step directory.
std::string commit_checkpoint(const std::string& dir, const SaveRequest& request,
                              const std::vector<RankFileInfo>& ranks);

// The newest committed step directory under ROOT, or "" when there is none.
std::string find_latest_checkpoint(const std::string& root);

// Accepts a step directory or a checkpoints root (then its newest committed step).
// Throws UserError if the directory is not a committed checkpoint.
std::string resolve_checkpoint(const std::string& path);

struct LoadedCheckpoint {
  std::string dir;
  int64_t step = 0;
  std::string recipe_toml;
  CheckpointState state;
};

// Fills every tensor of `into` (by name; global shapes must match the index, else a
// UserError naming the tensor and both shapes) from the checkpoint at `dir`, reading the
// rows each one asks for from whichever rank files hold them, into host or device memory.
// Verifies each rank file's size and CRC32 against the index before its first read; `state`
// is rank 0's /state.
LoadedCheckpoint load_checkpoint(const std::string& dir, std::vector<CheckpointTensor>& into);

}  // namespace sigma
