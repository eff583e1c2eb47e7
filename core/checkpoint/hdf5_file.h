// A small RAII wrapper over the HDF5 C API, just what checkpoint files use.
//
// Every HDF5 call is checked where it is made; a failure becomes one UserError line naming
// the file, the object and HDF5's innermost reason ("file signature not found"), with
// HDF5's own error-stack printing switched off. Files are opened with the "semi" close
// degree, so closing a file with objects still open is an error instead of a silently
// deferred close (the CRC of a file must be taken after its bytes are final).
// Leaves out: chunking, compression, and thread safety beyond that of the linked HDF5
// (Debian's serial build must be called from one thread at a time).
#pragma once

#include <hdf5.h>

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

namespace sigma::h5 {

// Throws UserError "<file>: <what> (<HDF5's reason>)" from HDF5's current error stack.
[[noreturn]] void throw_error(const std::string& file, std::string_view what);

// Returns `result` (an id, a status or a count), throwing when HDF5 reports failure (< 0).
template <typename T>
T check(T result, const std::string& file, std::string_view what) {
  if (result < 0) throw_error(file, what);
  return result;
}

// Owns one HDF5 id (file, group, dataset, attribute, dataspace, datatype or property list)
// and closes it with the matching H5*close. Knows its file and path, for messages.
class Object {
 public:
  Object() = default;
  Object(hid_t id, std::string file, std::string path = "");
  ~Object();  // closes quietly; call close() where a failure must be reported
  Object(Object&& other) noexcept;
  Object& operator=(Object&& other) noexcept;
  Object(const Object&) = delete;
  Object& operator=(const Object&) = delete;

  hid_t id() const { return id_; }
  const std::string& file() const { return file_; }
  const std::string& path() const { return path_; }
  void close();

 private:
  hid_t id_ = H5I_INVALID_HID;
  std::string file_;
  std::string path_;
};

// Files. create_file fails if `path` exists; open_file is read-only.
Object create_file(const std::string& path);
Object open_file(const std::string& path);

// Groups and datasets, by a '/'-separated path below `loc`. Creating makes any missing
// parent groups; a part of the path may contain dots ("model/model.norm.weight").
Object create_group(const Object& loc, const std::string& path);
Object open_group(const Object& loc, const std::string& path);
Object open_dataset(const Object& loc, const std::string& path);
bool exists(const Object& loc, const std::string& path);

// f32 datasets, stored little-endian IEEE, contiguous.
Object write_f32(const Object& loc, const std::string& path, const std::vector<int64_t>& dims,
                 const float* data);
std::vector<int64_t> dataset_dims(const Object& dataset);
// Reads rows [begin, end) of dim 0 (all of the other dims) into `out`.
void read_f32_rows(const Object& dataset, int64_t begin, int64_t end, float* out);

// Tables: 1-D datasets of a compound type whose fields the caller lays out.
struct Field {
  const char* name;
  size_t offset;
  hid_t type;  // a native type, e.g. H5T_NATIVE_INT64
};
Object compound_type(const std::string& file, size_t size, std::initializer_list<Field> fields);
Object write_table(const Object& loc, const std::string& path, const Object& type, size_t count,
                   const void* rows);
// Reads the whole table into `rows`, which holds dataset_dims(dataset)[0] rows of `type`.
void read_table(const Object& dataset, const Object& type, void* rows);

// Attributes: int64 and double scalars, int64 arrays and UTF-8 variable-length strings.
void set_int(const Object& obj, const std::string& name, int64_t value);
void set_ints(const Object& obj, const std::string& name, const std::vector<int64_t>& values);
void set_float(const Object& obj, const std::string& name, double value);
void set_string(const Object& obj, const std::string& name, std::string_view value);
int64_t get_int(const Object& obj, const std::string& name);
std::vector<int64_t> get_ints(const Object& obj, const std::string& name);
double get_float(const Object& obj, const std::string& name);
std::string get_string(const Object& obj, const std::string& name);

enum class AttributeKind { kInt, kFloat, kOther };
struct AttributeInfo {
  std::string name;
  AttributeKind kind;
};
// Every attribute of `obj`, in name order.
std::vector<AttributeInfo> list_attributes(const Object& obj);

}  // namespace sigma::h5
