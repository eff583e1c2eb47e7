// Loading a checkpoint: each requested tensor's rows, from whichever rank files hold them.
//
// The rows a caller asks for ([row_offset, row_offset + rows) of the global tensor) may lie
// in several rank files, written by another world size: each piece is one hyperslab read.
// A rank file is checked against the index (size, then CRC-32 of all its bytes) before its
// first read, so only the files this rank needs are read in full. A tensor in device memory
// is read into a host buffer the size of the largest such tensor, then copied. Leaves out:
// reading ranks' files in parallel, and converting dtypes (everything is f32).
#include "core/checkpoint/checkpoint.h"

#include "core/checkpoint/layout.h"
#include "core/checkpoint/rank_file.h"
#include "core/checkpoint/verify.h"
#include "core/error.h"
#include "kernels/device.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <vector>

namespace sigma {
namespace fs = std::filesystem;
namespace {

// The rank files of one checkpoint, each opened once, after its checksum matched.
class RankFiles {
 public:
  RankFiles(const fs::path& dir, const Index& index) : dir_(dir), index_(index) {}

  const h5::Object& get(int rank) {
    auto it = open_.find(rank);
    if (it != open_.end()) return it->second;
    std::string path = (dir_ / rank_file_name(rank)).string();
    check_rank_file(path, index_.rank_files()[size_t(rank)], (dir_ / kIndexFile).string());
    return open_.emplace(rank, h5::open_file(path)).first->second;
  }

 private:
  fs::path dir_;
  const Index& index_;
  std::map<int, h5::Object> open_;
};

// The slice holding `row` that reaches furthest, so overlapping slices cost fewer reads.
const IndexedSlice* slice_holding(const IndexedTensor& tensor, int64_t row) {
  const IndexedSlice* best = nullptr;
  for (const IndexedSlice& slice : tensor.slices)
    if (slice.row_offset <= row && row < slice.row_offset + slice.rows &&
        (!best || slice.row_offset + slice.rows > best->row_offset + best->rows))
      best = &slice;
  return best;
}

void read_rows(const std::string& dir, const IndexedTensor& indexed, RankFiles& files,
               const CheckpointTensor& tensor) {
  const Shape& global = tensor.global_shape;
  int64_t row_size = global[0] > 0 ? global.numel() / global[0] : 0;
  int64_t begin = tensor.row_offset;
  int64_t end = begin + tensor.data.shape[0];
  float* out = tensor.data.f32();
  for (int64_t row = begin; row < end;) {
    const IndexedSlice* slice = slice_holding(indexed, row);
    if (!slice) fail("checkpoint {}: no rank file holds row {} of {}", dir, row, tensor.name);
    int64_t stop = std::min(end, slice->row_offset + slice->rows);
    h5::Object dataset = h5::open_dataset(files.get(slice->rank), tensor.name);
    Shape stored = dims_shape(h5::dataset_dims(dataset), dataset.file(), tensor.name);
    Shape expected = global;
    expected.dims[0] = slice->rows;
    if (!(stored == expected))
      fail("{}: {} has shape {} but the index says {}", dataset.file(), tensor.name,
           stored.str(), expected.str());
    h5::read_f32_rows(dataset, row - slice->row_offset, stop - slice->row_offset,
                      out + (row - begin) * row_size);
    row = stop;
  }
}

}  // namespace

LoadedCheckpoint load_checkpoint(const std::string& dir, std::vector<CheckpointTensor>& into) {
  fs::path dir_path(dir);
  Index index = open_index(dir_path);  // checked against COMMITTED first
  RankFiles files(dir_path, index);
  std::vector<float> staging;
  for (const CheckpointTensor& tensor : into) {
    std::optional<IndexedTensor> indexed = index.tensor(tensor.name);
    if (!indexed) fail("checkpoint {} has no tensor {}", dir, tensor.name);
    if (!(indexed->global_shape == tensor.global_shape))
      fail("checkpoint {}: {} has shape {} but the model needs {}", dir, tensor.name,
           indexed->global_shape.str(), tensor.global_shape.str());
    CheckpointTensor target = tensor;
    const bool staged = tensor.data.device != Device::kCpu;
    if (staged) {
      staging.resize(std::max(staging.size(), size_t(tensor.data.numel())));
      target.data.data = staging.data();
      target.data.device = Device::kCpu;
    }
    check_host_slice(target);
    read_rows(dir, *indexed, files, target);
    if (staged) device::copy(tensor.data, target.data);
  }
  LoadedCheckpoint loaded;
  loaded.dir = dir;
  loaded.step = index.step();
  loaded.recipe_toml = index.recipe_toml();
  loaded.state = read_state(files.get(0));
  return loaded;
}

}  // namespace sigma
