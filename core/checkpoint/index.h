// index.h5 of a step directory: what the checkpoint is and where each tensor's rows are.
//
//   /                attributes format_version (int64, 1), step, world_size (int64),
//                    recipe (UTF-8 variable-length string: the resolved recipe TOML)
//   /rank_files      table, one row per rank file in rank order:
//                    {rank: int32, bytes: int64, crc32: uint32}
//   /tensors/<name>  table of the rank files holding rows of tensor <name>, by ascending rank:
//                    {rank: int32, row_offset: int64, rows: int64}, with attributes
//                    global_shape (int64[]) and dtype ("f32")
//
// The rows a rank holds of a tensor are [row_offset, row_offset + rows) of dim 0, stored in
// that rank's file at /<name>. Written by rank 0 from every rank's RankFileInfo.
#pragma once

#include "core/checkpoint/checkpoint.h"
#include "core/checkpoint/hdf5_file.h"

#include <optional>
#include <string>
#include <vector>

namespace sigma {

// Writes, closes and fsyncs the index; `ranks` in rank order, one per rank file.
void write_index(const std::string& path, int64_t step, const std::string& recipe_toml,
                 const std::vector<RankFileInfo>& ranks);

struct IndexedRankFile {
  int rank = 0;
  int64_t bytes = 0;
  uint32_t crc32 = 0;
};

struct IndexedSlice {
  int rank = 0;
  int64_t row_offset = 0;
  int64_t rows = 0;
};

struct IndexedTensor {
  Shape global_shape;
  std::vector<IndexedSlice> slices;
};

// An open index: the header is read and checked up front, tensors on demand.
// Throws UserError naming the file if it is missing, corrupt or of another format version.
class Index {
 public:
  explicit Index(const std::string& path);

  int64_t step() const { return step_; }
  const std::string& recipe_toml() const { return recipe_toml_; }
  const std::vector<IndexedRankFile>& rank_files() const { return rank_files_; }
  // nullopt if the checkpoint has no tensor of that name.
  std::optional<IndexedTensor> tensor(const std::string& name) const;

 private:
  h5::Object file_;
  int64_t step_ = 0;
  std::string recipe_toml_;
  std::vector<IndexedRankFile> rank_files_;
};

}  // namespace sigma
