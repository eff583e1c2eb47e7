// Checkpoints written by every rank of a process group at once, and the one checkpoint all
// ranks resume from: checkpoint.h's three save steps, joined by the group's collectives.
//
//   rank 0      dir = prepare_checkpoint_dir(root, step)           broadcast to every rank
//   every rank  info = write_rank_file(dir, request)               all at the same time
//   rank 0      commit_checkpoint(dir, request, every rank's info) after all are gathered
//   every rank  barrier: nobody goes on (or exits) before `latest` names the new step
// COMMITTED is written only once every rank's file is closed, fsynced and checksummed (a
// rank sends its RankFileInfo after that), so a rank dying mid-save leaves the step
// uncommitted, which nothing ever loads. Loading on another layout needs nothing here:
// each rank asks load_checkpoint() for the rows it holds, wherever they were written.
#pragma once

#include "core/checkpoint/checkpoint.h"
#include "core/dist/process_group.h"

#include <functional>
#include <string>

namespace sigma {

// `request.rank` and `world_size` are taken from the group. Returns the step directory.
std::string save_checkpoint(SaveRequest request, ProcessGroup& group);

// The checkpoint to resume from, as `find` says on rank 0 ("" when there is none), the same
// on every rank. A UserError of `find` (a bad path, no intact checkpoint) is rank 0's to
// report: the others receive it and fail with it, so every rank exits.
std::string agree_on_checkpoint(ProcessGroup& group, const std::function<std::string()>& find);

// RankFileInfo as bytes and back, for gathering (JSON: names and numbers, readable).
std::string encode_rank_file_info(const RankFileInfo& info);
RankFileInfo decode_rank_file_info(const std::string& bytes);

}  // namespace sigma
