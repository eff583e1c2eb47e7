// Writing and reading index.h5 (layout in index.h).
#include "core/checkpoint/index.h"

#include "core/checkpoint/durable_fs.h"
#include "core/checkpoint/index_rows.h"
#include "core/checkpoint/layout.h"
#include "core/error.h"

#include <cstddef>
#include <filesystem>
#include <map>

namespace sigma {

h5::Object rank_file_row_type(const std::string& file) {
  return h5::compound_type(file, sizeof(RankFileRow),
                           {{"rank", offsetof(RankFileRow, rank), H5T_NATIVE_INT32},
                            {"bytes", offsetof(RankFileRow, bytes), H5T_NATIVE_INT64},
                            {"crc32", offsetof(RankFileRow, crc32), H5T_NATIVE_UINT32}});
}

h5::Object slice_row_type(const std::string& file) {
  return h5::compound_type(file, sizeof(SliceRow),
                           {{"rank", offsetof(SliceRow, rank), H5T_NATIVE_INT32},
                            {"row_offset", offsetof(SliceRow, row_offset), H5T_NATIVE_INT64},
                            {"rows", offsetof(SliceRow, rows), H5T_NATIVE_INT64}});
}

namespace {

constexpr char kTensorsGroup[] = "tensors";
constexpr char kRankFilesTable[] = "rank_files";

struct MergedTensor {
  Shape global_shape;
  std::vector<SliceRow> slices;
};

// Every rank's slices of each tensor, by name; the ranks must agree on global shapes.
std::map<std::string, MergedTensor> merge_slices(const std::vector<RankFileInfo>& ranks) {
  std::map<std::string, MergedTensor> tensors;
  for (const RankFileInfo& info : ranks) {
    for (const TensorSlice& slice : info.slices) {
      auto [it, inserted] = tensors.try_emplace(slice.name, MergedTensor{slice.global_shape, {}});
      SIGMA_CHECK(it->second.global_shape == slice.global_shape, "{}: rank {} says {}, not {}",
                  slice.name, info.rank, slice.global_shape.str(),
                  it->second.global_shape.str());
      if (slice.rows > 0)
        it->second.slices.push_back({int32_t(info.rank), slice.row_offset, slice.rows});
    }
  }
  return tensors;
}

}  // namespace

void write_index(const std::string& path, int64_t step, const std::string& recipe_toml,
                 const std::vector<RankFileInfo>& ranks) {
  std::vector<RankFileRow> rank_rows;
  for (size_t i = 0; i < ranks.size(); ++i) {
    SIGMA_CHECK(ranks[i].rank == int(i), "rank file {} is listed as rank {}", i, ranks[i].rank);
    rank_rows.push_back({int32_t(i), ranks[i].bytes, ranks[i].crc32});
  }
  h5::Object file = h5::create_file(path);
  h5::set_int(file, "format_version", kFormatVersion);
  h5::set_int(file, "step", step);
  h5::set_int(file, "world_size", int64_t(ranks.size()));
  h5::set_string(file, "recipe", recipe_toml);
  {
    h5::Object type = rank_file_row_type(path);
    h5::write_table(file, kRankFilesTable, type, rank_rows.size(), rank_rows.data()).close();
  }
  h5::Object tensors = h5::create_group(file, kTensorsGroup);
  h5::Object slice_type = slice_row_type(path);
  for (const auto& [name, merged] : merge_slices(ranks)) {
    h5::Object table =
        h5::write_table(tensors, name, slice_type, merged.slices.size(), merged.slices.data());
    h5::set_ints(table, "global_shape", shape_dims(merged.global_shape));
    h5::set_string(table, "dtype", "f32");
    table.close();
  }
  slice_type.close();
  tensors.close();
  file.close();
  fsync_path(path);
}

Index::Index(const std::string& path) {
  std::error_code error;
  if (!std::filesystem::is_regular_file(path, error))
    fail("{}: missing; the checkpoint is incomplete", path);
  file_ = h5::open_file(path);
  int64_t version = h5::get_int(file_, "format_version");
  if (version != kFormatVersion)
    fail("{}: checkpoint format version {} is not supported (this sigma reads {})", path,
         version, kFormatVersion);
  step_ = h5::get_int(file_, "step");
  recipe_toml_ = h5::get_string(file_, "recipe");
  int64_t world_size = h5::get_int(file_, "world_size");

  h5::Object table = h5::open_dataset(file_, kRankFilesTable);
  std::vector<int64_t> dims = h5::dataset_dims(table);
  if (world_size < 1 || dims.size() != 1 || dims[0] != world_size)
    fail("{}: world_size is {} but /{} lists {} files", path, world_size, kRankFilesTable,
         dims.empty() ? 0 : dims[0]);
  std::vector<RankFileRow> rows(size_t(world_size), RankFileRow{});
  h5::read_table(table, rank_file_row_type(path), rows.data());
  for (size_t i = 0; i < rows.size(); ++i) {
    if (rows[i].rank != int32_t(i))
      fail("{}: /{} row {} is for rank {}", path, kRankFilesTable, i, rows[i].rank);
    rank_files_.push_back({rows[i].rank, rows[i].bytes, rows[i].crc32});
  }
}

std::optional<IndexedTensor> Index::tensor(const std::string& name) const {
  const std::string& path = file_.file();
  std::string link = std::string(kTensorsGroup) + "/" + name;
  if (!h5::exists(file_, link)) return std::nullopt;
  h5::Object table = h5::open_dataset(file_, link);
  std::string dtype = h5::get_string(table, "dtype");
  if (dtype != "f32") fail("{}: {} has dtype {}; this sigma reads f32", path, name, dtype);
  IndexedTensor tensor;
  tensor.global_shape = dims_shape(h5::get_ints(table, "global_shape"), path, name);

  std::vector<int64_t> dims = h5::dataset_dims(table);
  if (dims.size() != 1) fail("{}: {} is not a table of slices", path, link);
  std::vector<SliceRow> rows(size_t(dims[0]), SliceRow{});
  h5::read_table(table, slice_row_type(path), rows.data());
  for (const SliceRow& row : rows) {
    if (row.rank < 0 || size_t(row.rank) >= rank_files_.size() || row.row_offset < 0 ||
        row.rows < 0 || row.row_offset + row.rows > tensor.global_shape[0])
      fail("{}: {} lists rows [{}, {}) in rank {}, outside the tensor or the world", path, name,
           row.row_offset, row.row_offset + row.rows, row.rank);
    tensor.slices.push_back({row.rank, row.row_offset, row.rows});
  }
  return tensor;
}

}  // namespace sigma
