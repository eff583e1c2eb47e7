// The safetensors format, written and read by hand (it is three parts, no library needed):
//   8 bytes   little-endian u64: the length H of the JSON header
//   H bytes   JSON: {"NAME": {"dtype": "F32"|"BF16"|"F16", "shape": [...],
//                              "data_offsets": [begin, end]}, ..., "__metadata__": {...}}
//   the rest  every tensor's raw little-endian bytes at [begin, end) of this part
// The header is padded with spaces to a multiple of 8 bytes, as the reference writer does.
// Sharded checkpoints add model.safetensors.index.json: {"metadata": {"total_size": B},
// "weight_map": {"NAME": "model-00001-of-00002.safetensors", ...}}.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace sigma::safetensors {

enum class DType { kF32, kBF16, kF16 };
const char* dtype_name(DType dtype);

// One tensor to write: fp32 values, stored as `dtype` (bf16 rounds to nearest even).
struct TensorToWrite {
  std::string name;
  std::vector<int64_t> shape;
  const float* data = nullptr;
};

// Writes `tensors` (in order) into shards of at most `max_shard_bytes` each (a tensor larger
// than that gets a shard of its own) in `dir`: model.safetensors when one shard suffices,
// else model-0000K-of-0000N.safetensors plus model.safetensors.index.json. Returns the bytes
// of tensor data written.
int64_t write_sharded(const std::string& dir, const std::vector<TensorToWrite>& tensors,
                      DType dtype, int64_t max_shard_bytes);

struct TensorRead {
  std::vector<int64_t> shape;
  DType stored = DType::kF32;
  std::vector<float> values;  // converted to fp32
};

// Every tensor of a checkpoint directory (model.safetensors, or the shards its index names),
// by name. UserError naming the file on a malformed header or an unsupported dtype.
std::map<std::string, TensorRead> read_dir(const std::string& dir);

}  // namespace sigma::safetensors
