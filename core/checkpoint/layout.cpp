// Checkpoint layout: names, committed-ness, and finding the checkpoint to resume from.
#include "core/checkpoint/layout.h"

#include "core/error.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <fstream>
#include <system_error>

namespace sigma {
namespace fs = std::filesystem;
namespace {

constexpr std::string_view kStepPrefix = "step_";

// "a/b/" names b, as "a/b" does.
std::string last_part(const fs::path& path) {
  fs::path normal = path.lexically_normal();
  if (normal.filename().empty()) normal = normal.parent_path();
  return normal.filename().string();
}

std::string read_latest(const fs::path& root) {
  std::ifstream in(root / kLatestFile);
  std::string name;
  in >> name;  // a missing or unreadable file reads as "": fall back to scanning
  return name;
}

}  // namespace

std::string step_dir_name(int64_t step) { return fmt::format("step_{:08d}", step); }

std::string leftover_dir_name(int64_t step, const char* kind) {
  return fmt::format("{}.{}-{}", step_dir_name(step), kind, ::getpid());
}

std::string rank_file_name(int rank) { return fmt::format("rank_{:05d}.h5", rank); }

std::optional<StepDir> parse_step_dir(const fs::path& path) {
  std::string name = last_part(path);
  if (!name.starts_with(kStepPrefix)) return std::nullopt;
  const char* begin = name.data() + kStepPrefix.size();
  const char* end = name.data() + name.size();
  StepDir dir;
  auto [rest, error] = std::from_chars(begin, end, dir.step);
  if (error != std::errc() || rest == begin || dir.step < 0) return std::nullopt;
  std::string_view suffix(rest, size_t(end - rest));
  if (suffix.empty()) {
    dir.kind = StepDirKind::kCheckpoint;
  } else if (suffix.starts_with(".tmp-") || suffix.starts_with(".old-")) {
    dir.kind = StepDirKind::kLeftover;
  } else {
    return std::nullopt;
  }
  dir.path = path;
  dir.committed = dir.kind == StepDirKind::kCheckpoint && is_committed(path);
  return dir;
}

std::vector<StepDir> list_step_dirs(const fs::path& root) {
  std::vector<StepDir> dirs;
  std::error_code error;
  if (!fs::is_directory(root, error)) return dirs;
  for (const fs::directory_entry& entry : fs::directory_iterator(root, error)) {
    if (!entry.is_directory(error)) continue;
    if (std::optional<StepDir> dir = parse_step_dir(entry.path())) dirs.push_back(*dir);
  }
  if (error) fail("{}: cannot list: {}", root.string(), error.message());
  std::sort(dirs.begin(), dirs.end(),
            [](const StepDir& a, const StepDir& b) { return a.step < b.step; });
  return dirs;
}

bool is_committed(const fs::path& dir) {
  std::error_code error;
  return fs::is_regular_file(dir / kCommittedFile, error);
}

void fail_not_committed(const std::string& dir) {
  fail("{}: not a committed checkpoint (no COMMITTED file); it was probably interrupted while "
       "saving",
       dir);
}

std::string find_latest_checkpoint(const std::string& root) {
  if (root.empty()) return "";
  fs::path root_path(root);
  std::string name = read_latest(root_path);
  std::optional<StepDir> named = parse_step_dir(name);
  if (named && named->kind == StepDirKind::kCheckpoint && name.find('/') == std::string::npos &&
      is_committed(root_path / name))
    return (root_path / name).string();
  // `latest` is missing or stale (say, its directory was deleted by hand): scan.
  std::vector<StepDir> dirs = list_step_dirs(root_path);
  for (auto it = dirs.rbegin(); it != dirs.rend(); ++it)
    if (it->committed) return it->path.string();
  return "";
}

std::string resolve_checkpoint(const std::string& path) {
  fs::path dir(path);
  std::error_code error;
  if (!fs::exists(dir, error)) fail("{}: no such checkpoint directory", path);
  if (!fs::is_directory(dir, error))
    fail("{}: not a directory; expected a checkpoint (step_*) or a checkpoints directory", path);
  if (is_committed(dir)) return path;
  if (parse_step_dir(dir) || fs::exists(dir / kIndexFile, error) ||
      fs::exists(dir / rank_file_name(0), error))
    fail_not_committed(path);
  std::string latest = find_latest_checkpoint(path);
  if (latest.empty())
    fail("{}: no committed checkpoint here (no committed step_* directory)", path);
  return latest;
}

std::vector<int64_t> shape_dims(const Shape& shape) {
  return std::vector<int64_t>(shape.dims.begin(), shape.dims.begin() + shape.rank);
}

Shape dims_shape(const std::vector<int64_t>& dims, const std::string& file,
                 const std::string& what) {
  if (dims.empty() || dims.size() > 4)
    fail("{}: {} has {} dimensions; checkpoints hold tensors of 1 to 4", file, what, dims.size());
  Shape shape;
  for (int64_t d : dims) {
    if (d < 0) fail("{}: {} has a negative dimension {}", file, what, d);
    shape.dims[size_t(shape.rank++)] = d;
  }
  return shape;
}

void check_host_slice(const CheckpointTensor& tensor) {
  const Tensor& data = tensor.data;
  const Shape& global = tensor.global_shape;
  SIGMA_CHECK(data.device == Device::kCpu && data.dtype == DType::kF32, "{}: {} on {}",
              tensor.name, dtype_name(data.dtype), device_name(data.device));
  SIGMA_CHECK(global.rank >= 1 && data.shape.rank == global.rank, "{}: rows {} of {}",
              tensor.name, data.shape.str(), global.str());
  for (int i = 1; i < global.rank; ++i)
    SIGMA_CHECK(data.shape[i] == global[i], "{}: rows {} of {}", tensor.name, data.shape.str(),
                global.str());
  SIGMA_CHECK(tensor.row_offset >= 0 && tensor.row_offset + data.shape[0] <= global[0],
              "{}: rows {} at offset {} of {}", tensor.name, data.shape.str(), tensor.row_offset,
              global.str());
  SIGMA_CHECK(data.shape[0] == 0 || data.data != nullptr, "{}: no memory", tensor.name);
}

}  // namespace sigma
