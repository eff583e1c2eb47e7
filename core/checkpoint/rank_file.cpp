// Writing a rank file, and reading its /state back. Tensor rows are read in load.cpp.
#include "core/checkpoint/rank_file.h"

#include "core/checkpoint/crc32.h"
#include "core/checkpoint/durable_fs.h"
#include "core/checkpoint/layout.h"
#include "core/error.h"
#include "core/fault.h"

#include <filesystem>

namespace sigma {
namespace {

void write_state(const h5::Object& file, const CheckpointState& state) {
  h5::Object group = h5::create_group(file, "state");
  for (const auto& [key, value] : state.ints) h5::set_int(group, key, value);
  for (const auto& [key, value] : state.floats) {
    // One attribute per key: the same key in both maps would collide in the file.
    SIGMA_CHECK(!state.ints.contains(key), "state key {} is both int and float", key);
    h5::set_float(group, key, value);
  }
  group.close();
}

}  // namespace

RankFileInfo write_rank_file(const std::string& dir, const SaveRequest& request) {
  SIGMA_CHECK(request.rank >= 0 && request.rank < request.world_size, "rank {} of {}",
              request.rank, request.world_size);
  std::string path = (std::filesystem::path(dir) / rank_file_name(request.rank)).string();
  RankFileInfo info;
  info.rank = request.rank;
  h5::Object file = h5::create_file(path);
  h5::set_int(file, "rank", request.rank);
  h5::set_int(file, "world_size", request.world_size);
  h5::set_int(file, "step", request.step);
  for (const CheckpointTensor& tensor : request.tensors) {
    check_host_slice(tensor);
    int64_t rows = tensor.data.shape[0];
    info.slices.push_back({tensor.name, tensor.global_shape, tensor.row_offset, rows});
    if (rows == 0) continue;
    h5::Object dataset =
        h5::write_f32(file, tensor.name, shape_dims(tensor.data.shape), tensor.data.f32());
    h5::set_ints(dataset, "global_shape", shape_dims(tensor.global_shape));
    h5::set_int(dataset, "row_offset", tensor.row_offset);
    dataset.close();
    fault::point("checkpoint.rank_file.tensor");
  }
  write_state(file, request.state);
  file.close();
  fault::point("checkpoint.rank_file");
  // The CRC is of the bytes that reached the disk, so it is taken after the fsync.
  fsync_path(path);
  FileDigest digest = digest_file(path);
  info.bytes = digest.bytes;
  info.crc32 = digest.crc32;
  return info;
}

CheckpointState read_state(const h5::Object& rank_file) {
  h5::Object group = h5::open_group(rank_file, "state");
  CheckpointState state;
  for (const h5::AttributeInfo& attribute : h5::list_attributes(group)) {
    switch (attribute.kind) {
      case h5::AttributeKind::kInt:
        state.ints[attribute.name] = h5::get_int(group, attribute.name);
        break;
      case h5::AttributeKind::kFloat:
        state.floats[attribute.name] = h5::get_float(group, attribute.name);
        break;
      case h5::AttributeKind::kOther:
        fail("{}: /state attribute {} is neither an integer nor a float", rank_file.file(),
             attribute.name);
    }
  }
  return state;
}

}  // namespace sigma
