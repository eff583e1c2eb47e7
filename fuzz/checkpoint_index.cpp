// Fuzz target: opening a checkpoint's index (open_index: the COMMITTED seal, then index.h5)
// and looking tensors up in it. The first byte picks what the rest is:
//   even: raw files: COMMITTED's text, a NUL, then index.h5's bytes. HDF5 parses them only
//         when the seal's size and CRC match (core/checkpoint/verify.h: HDF5 itself is not
//         hardened against corrupt files, so no unverified byte may reach it).
//   odd:  a structured index: the bytes choose the values of a well-formed HDF5 file (header
//         attributes, the rank_files table with fields left out or retyped, tensor tables,
//         shapes, dtypes), sealed correctly, so the reader's own checks are what is fuzzed.
// Rejection only as a UserError.
#include "core/checkpoint/hdf5_file.h"
#include "core/checkpoint/index_rows.h"
#include "core/checkpoint/verify.h"
#include "core/error.h"
#include "fuzz/scratch.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace {

namespace h5 = sigma::h5;
using sigma::RankFileRow;
using sigma::SliceRow;

// The input read front to back; past its end every byte reads as 0.
class Bytes {
 public:
  Bytes(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  uint8_t u8() { return at_ < size_ ? data_[at_++] : 0; }
  bool bit() { return u8() & 1; }
  // A signed integer of `bytes` little-endian bytes.
  int64_t integer(int bytes) {
    uint64_t value = 0;
    for (int i = 0; i < bytes; ++i) value |= uint64_t(u8()) << (8 * i);
    int shift = 64 - 8 * bytes;
    return shift == 0 ? int64_t(value) : int64_t(value << shift) >> shift;
  }
  std::string text(size_t max) {
    std::string s(u8() % (max + 1), '\0');
    for (char& c : s) c = char(u8());
    return s;
  }
  std::string_view rest() const {
    return {reinterpret_cast<const char*>(data_) + std::min(at_, size_),
            size_ - std::min(at_, size_)};
  }

 private:
  const uint8_t* data_;
  size_t size_, at_ = 0;
};

h5::Object rank_row_type(const std::string& file, int layout) {
  switch (layout) {
    case 0:
      return sigma::rank_file_row_type(file);
    case 1:  // no crc32
      return h5::compound_type(file, sizeof(RankFileRow),
                               {{"rank", offsetof(RankFileRow, rank), H5T_NATIVE_INT32},
                                {"bytes", offsetof(RankFileRow, bytes), H5T_NATIVE_INT64}});
    default:  // narrower and wider fields than the reader's
      return h5::compound_type(file, sizeof(RankFileRow),
                               {{"rank", offsetof(RankFileRow, rank), H5T_NATIVE_INT8},
                                {"bytes", offsetof(RankFileRow, bytes), H5T_NATIVE_UINT64},
                                {"crc32", offsetof(RankFileRow, crc32), H5T_NATIVE_INT32}});
  }
}

void write_structured_index(const std::string& path, Bytes& in) {
  h5::Object file = h5::create_file(path);
  if (in.bit()) h5::set_int(file, "format_version", in.bit() ? 1 : in.integer(1));
  if (in.bit()) h5::set_int(file, "step", in.integer(8));
  if (in.bit()) h5::set_int(file, "world_size", in.integer(1));
  if (in.bit()) h5::set_string(file, "recipe", in.text(40));
  std::vector<RankFileRow> ranks(in.u8() % 5);
  for (RankFileRow& row : ranks)
    row = {int32_t(in.integer(1)), in.integer(4), uint32_t(in.integer(4))};
  int layout = in.u8() % 3;
  if (in.bit()) {
    h5::Object type = rank_row_type(path, layout);
    h5::write_table(file, "rank_files", type, ranks.size(), ranks.data()).close();
  }
  h5::Object slice_type = sigma::slice_row_type(path);
  for (int t = in.u8() % 4; t > 0; --t) {
    int pick = in.u8() % 3;
    std::string name = pick == 0 ? "model/w" : pick == 1 ? "optim/m/w" : in.text(12);
    std::vector<SliceRow> slices(in.u8() % 4);
    for (SliceRow& s : slices) s = {int32_t(in.integer(1)), in.integer(2), in.integer(2)};
    h5::Object table =
        h5::write_table(file, "tensors/" + name, slice_type, slices.size(), slices.data());
    std::vector<int64_t> dims(in.u8() % 6);
    for (int64_t& d : dims) d = in.integer(2);
    if (!dims.empty()) h5::set_ints(table, "global_shape", dims);
    if (in.bit()) h5::set_string(table, "dtype", in.bit() ? "f32" : in.text(6));
    table.close();
  }
  slice_type.close();
  file.close();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace fs = std::filesystem;
  fs::path dir = sigma::fuzz::scratch_dir("checkpoint_index") / "step_00000001";
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::string index = (dir / "index.h5").string();
  Bytes in(data, size);
  if (in.u8() % 2 == 0) {
    std::string_view rest = in.rest();
    size_t nul = rest.find('\0');
    sigma::fuzz::write_file(dir / "COMMITTED", rest.substr(0, nul));
    sigma::fuzz::write_file(index, nul == std::string_view::npos ? "" : rest.substr(nul + 1));
  } else {
    try {
      write_structured_index(index, in);
    } catch (const sigma::UserError&) {
      return 0;  // a name HDF5 cannot create: nothing to read
    }
    sigma::fuzz::write_file(dir / "COMMITTED",
                            sigma::committed_text(1, 1, sigma::digest_file(index)));
  }
  try {
    sigma::Index opened = sigma::open_index(dir);
    (void)opened.tensor("model/w");
    (void)opened.tensor("optim/m/w");
  } catch (const sigma::UserError&) {
  }
  (void)sigma::verify_checkpoint(dir);
  return 0;
}
