// Where a checkpoint lives on disk: the names of its directories and files, how shapes are
// stored, and what makes a directory committed. Shared by saving and loading.
//
//   ROOT/latest                  text: the name of the newest committed step directory
//   ROOT/step_00001000/          a checkpoint; loadable only once COMMITTED exists
//   ROOT/step_00001000.tmp-PID/  staging for re-saving a step that is already committed
//   ROOT/step_00001000.old-PID/  the replaced copy, where the file system cannot swap
//                                directories atomically (both are "leftovers" if found)
#pragma once

#include "core/checkpoint/checkpoint.h"

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace sigma {

inline constexpr char kCommittedFile[] = "COMMITTED";
inline constexpr char kIndexFile[] = "index.h5";
inline constexpr char kLatestFile[] = "latest";
inline constexpr int kFormatVersion = 1;

std::string step_dir_name(int64_t step);                      // "step_00001000"
std::string leftover_dir_name(int64_t step, const char* kind);  // "step_00001000.tmp-PID"
std::string rank_file_name(int rank);                         // "rank_00000.h5"

enum class StepDirKind { kCheckpoint, kLeftover };

struct StepDir {
  std::filesystem::path path;
  int64_t step = 0;
  StepDirKind kind = StepDirKind::kCheckpoint;
  bool committed = false;  // only a kCheckpoint directory counts as committed
};

// The step directory a name denotes, or nullopt if it is not one of ours.
std::optional<StepDir> parse_step_dir(const std::filesystem::path& path);
// Every step directory directly under `root`, by ascending step; none if `root` is absent.
std::vector<StepDir> list_step_dirs(const std::filesystem::path& root);
bool is_committed(const std::filesystem::path& dir);
[[noreturn]] void fail_not_committed(const std::string& dir);

// Shapes as HDF5 dims, and back (UserError naming `file` if the dims cannot be a Shape).
std::vector<int64_t> shape_dims(const Shape& shape);
Shape dims_shape(const std::vector<int64_t>& dims, const std::string& file,
                 const std::string& what);

// The caller's side of a slice must be well formed: host f32 rows of the global shape.
void check_host_slice(const CheckpointTensor& tensor);

}  // namespace sigma
