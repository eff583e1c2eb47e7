// The HDF5 wrapper: ids closed by RAII, every call checked, one-line errors.
#include "core/checkpoint/hdf5_file.h"

#include "core/error.h"

#include <utility>

namespace sigma::h5 {
namespace {

// The walk visits the innermost frame first: the place HDF5 found the problem, which
// carries the most specific text ("file signature not found").
herr_t keep_innermost(unsigned n, const H5E_error2_t* error, void* out) {
  if (n == 0 && error->desc) *static_cast<std::string*>(out) = error->desc;
  return 0;
}

herr_t close_id(hid_t id) {
  switch (H5Iget_type(id)) {
    case H5I_FILE: return H5Fclose(id);
    case H5I_GROUP: return H5Gclose(id);
    case H5I_DATASET: return H5Dclose(id);
    case H5I_ATTR: return H5Aclose(id);
    case H5I_DATASPACE: return H5Sclose(id);
    case H5I_DATATYPE: return H5Tclose(id);
    case H5I_GENPROP_LST: return H5Pclose(id);
    default: return -1;
  }
}

std::string label(const Object& obj) { return obj.path().empty() ? "/" : obj.path(); }

// Objects below a file share its name; `what` names the object too.
std::string object_name(const Object& obj, const std::string& path) {
  if (obj.path().empty()) return "/" + path;
  return obj.path() + "/" + path;
}

Object file_access(const std::string& file) {
  // Called before the first HDF5 operation on every file: HDF5 would otherwise print its
  // whole error stack to stderr on each failure, before we report the one line. And no
  // clean-up at exit: after a write failed (a full disk) HDF5 keeps the half-closed file,
  // and its exit handler crashes on it (Debian's 1.10.8); every file we finish is closed
  // by us. H5dont_atexit only counts before the library's first call, so it comes first.
  H5dont_atexit();
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  Object fapl(check(H5Pcreate(H5P_FILE_ACCESS), file, "cannot create a property list"), file);
  check(H5Pset_fclose_degree(fapl.id(), H5F_CLOSE_SEMI), file, "cannot set the close degree");
  return fapl;
}

Object link_creation_with_parents(const std::string& file) {
  Object lcpl(check(H5Pcreate(H5P_LINK_CREATE), file, "cannot create a property list"), file);
  check(H5Pset_create_intermediate_group(lcpl.id(), 1), file, "cannot set intermediate groups");
  return lcpl;
}

Object string_type(const std::string& file) {
  Object type(check(H5Tcopy(H5T_C_S1), file, "cannot copy the string type"), file);
  check(H5Tset_size(type.id(), H5T_VARIABLE), file, "cannot make a variable-length string");
  check(H5Tset_cset(type.id(), H5T_CSET_UTF8), file, "cannot set UTF-8");
  return type;
}

Object dataspace(const std::string& file, const std::vector<hsize_t>& dims) {
  hid_t id = dims.empty() ? H5Screate(H5S_SCALAR)
                          : H5Screate_simple(int(dims.size()), dims.data(), nullptr);
  return Object(check(id, file, "cannot create a dataspace"), file);
}

void write_attribute(const Object& obj, const std::string& name, hid_t file_type,
                     hid_t memory_type, const std::vector<hsize_t>& dims, const void* data) {
  const std::string& file = obj.file();
  std::string what = "cannot write attribute " + name + " of " + label(obj);
  Object space = dataspace(file, dims);
  Object attr(check(H5Acreate2(obj.id(), name.c_str(), file_type, space.id(), H5P_DEFAULT,
                               H5P_DEFAULT),
                    file, what),
              file);
  check(H5Awrite(attr.id(), memory_type, data), file, what);
  attr.close();
}

Object open_attribute(const Object& obj, const std::string& name) {
  return Object(check(H5Aopen(obj.id(), name.c_str(), H5P_DEFAULT), obj.file(),
                      "cannot open attribute " + name + " of " + label(obj)),
                obj.file());
}

hssize_t attribute_size(const Object& attr, const std::string& what) {
  Object space(check(H5Aget_space(attr.id()), attr.file(), what), attr.file());
  return check(H5Sget_simple_extent_npoints(space.id()), attr.file(), what);
}

void read_attribute(const Object& obj, const std::string& name, hid_t memory_type,
                    hssize_t expected, void* out) {
  std::string what = "cannot read attribute " + name + " of " + label(obj);
  Object attr = open_attribute(obj, name);
  hssize_t size = attribute_size(attr, what);
  if (size != expected)
    fail("{}: attribute {} of {} has {} values, expected {}", obj.file(), name, label(obj), size,
         expected);
  check(H5Aread(attr.id(), memory_type, out), obj.file(), what);
}

herr_t collect_name(hid_t, const char* name, const H5A_info_t*, void* out) {
  static_cast<std::vector<std::string>*>(out)->push_back(name);
  return 0;
}

// HDF5's text for a failed system call spans two lines and lists the call's arguments
// ("file write failed: time = ...\n, filename = ..., error message = 'No space left on
// device', ..."): one line keeps what failed and the system's reason.
std::string one_line(const std::string& reason) {
  constexpr std::string_view kMessage = "error message = '";
  size_t message = reason.find(kMessage);
  if (message != std::string::npos) {
    size_t begin = message + kMessage.size();
    size_t end = reason.find('\'', begin);
    return reason.substr(0, reason.find(':')) + ": " + reason.substr(begin, end - begin);
  }
  std::string text = reason;
  for (char& c : text)
    if (c == '\n') c = ' ';
  return text;
}

}  // namespace

[[noreturn]] void throw_error(const std::string& file, std::string_view what) {
  std::string reason;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, keep_innermost, &reason);
  H5Eclear2(H5E_DEFAULT);
  if (reason.empty()) fail("{}: {}", file, what);
  fail("{}: {} ({})", file, what, one_line(reason));
}

Object::Object(hid_t id, std::string file, std::string path)
    : id_(id), file_(std::move(file)), path_(std::move(path)) {}

Object::~Object() {
  if (id_ >= 0) close_id(id_);
}

Object::Object(Object&& other) noexcept
    : id_(std::exchange(other.id_, H5I_INVALID_HID)),
      file_(std::move(other.file_)),
      path_(std::move(other.path_)) {}

Object& Object::operator=(Object&& other) noexcept {
  if (this != &other) {
    if (id_ >= 0) close_id(id_);
    id_ = std::exchange(other.id_, H5I_INVALID_HID);
    file_ = std::move(other.file_);
    path_ = std::move(other.path_);
  }
  return *this;
}

void Object::close() {
  if (id_ < 0) return;
  hid_t id = std::exchange(id_, H5I_INVALID_HID);
  check(close_id(id), file_, path_.empty() ? "cannot close" : "cannot close " + path_);
}

Object create_file(const std::string& path) {
  Object fapl = file_access(path);
  hid_t id = H5Fcreate(path.c_str(), H5F_ACC_EXCL, H5P_DEFAULT, fapl.id());
  return Object(check(id, path, "cannot create HDF5 file"), path);
}

Object open_file(const std::string& path) {
  Object fapl = file_access(path);
  hid_t id = H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl.id());
  return Object(check(id, path, "cannot open as HDF5 file"), path);
}

Object create_group(const Object& loc, const std::string& path) {
  std::string name = object_name(loc, path);
  Object lcpl = link_creation_with_parents(loc.file());
  hid_t id = H5Gcreate2(loc.id(), path.c_str(), lcpl.id(), H5P_DEFAULT, H5P_DEFAULT);
  return Object(check(id, loc.file(), "cannot create group " + name), loc.file(), name);
}

Object open_group(const Object& loc, const std::string& path) {
  std::string name = object_name(loc, path);
  hid_t id = H5Gopen2(loc.id(), path.c_str(), H5P_DEFAULT);
  return Object(check(id, loc.file(), "cannot open group " + name), loc.file(), name);
}

Object open_dataset(const Object& loc, const std::string& path) {
  std::string name = object_name(loc, path);
  hid_t id = H5Dopen2(loc.id(), path.c_str(), H5P_DEFAULT);
  return Object(check(id, loc.file(), "cannot open dataset " + name), loc.file(), name);
}

bool exists(const Object& loc, const std::string& path) {
  // H5Lexists fails, rather than answering false, when a parent group is missing: walk
  // the path one part at a time.
  std::string what = "cannot look up " + object_name(loc, path);
  size_t end = 0;
  while (end != std::string::npos) {
    end = path.find('/', end + 1);
    std::string prefix = path.substr(0, end);
    if (check(H5Lexists(loc.id(), prefix.c_str(), H5P_DEFAULT), loc.file(), what) == 0)
      return false;
  }
  return true;
}

Object write_f32(const Object& loc, const std::string& path, const std::vector<int64_t>& dims,
                 const float* data) {
  std::string name = object_name(loc, path);
  std::string what = "cannot write dataset " + name;
  Object space = dataspace(loc.file(), std::vector<hsize_t>(dims.begin(), dims.end()));
  Object lcpl = link_creation_with_parents(loc.file());
  Object dataset(check(H5Dcreate2(loc.id(), path.c_str(), H5T_IEEE_F32LE, space.id(),
                                  lcpl.id(), H5P_DEFAULT, H5P_DEFAULT),
                       loc.file(), what),
                 loc.file(), name);
  check(H5Dwrite(dataset.id(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data),
        loc.file(), what);
  return dataset;
}

std::vector<int64_t> dataset_dims(const Object& dataset) {
  std::string what = "cannot read the shape of " + dataset.path();
  Object space(check(H5Dget_space(dataset.id()), dataset.file(), what), dataset.file());
  int rank = check(H5Sget_simple_extent_ndims(space.id()), dataset.file(), what);
  std::vector<hsize_t> dims(size_t(rank), 0);
  check(H5Sget_simple_extent_dims(space.id(), dims.data(), nullptr), dataset.file(), what);
  return std::vector<int64_t>(dims.begin(), dims.end());
}

void read_f32_rows(const Object& dataset, int64_t begin, int64_t end, float* out) {
  const std::string& file = dataset.file();
  std::string what =
      "cannot read rows [" + std::to_string(begin) + ", " + std::to_string(end) + ") of " +
      dataset.path();
  std::vector<int64_t> dims = dataset_dims(dataset);
  if (dims.empty() || begin < 0 || end > dims[0] || begin > end)
    fail("{}: {}: it has {} rows", file, what, dims.empty() ? 0 : dims[0]);
  std::vector<hsize_t> start(dims.size(), 0);
  std::vector<hsize_t> count(dims.begin(), dims.end());
  start[0] = hsize_t(begin);
  count[0] = hsize_t(end - begin);
  Object file_space(check(H5Dget_space(dataset.id()), file, what), file);
  check(H5Sselect_hyperslab(file_space.id(), H5S_SELECT_SET, start.data(), nullptr,
                            count.data(), nullptr),
        file, what);
  Object memory_space = dataspace(file, count);
  check(H5Dread(dataset.id(), H5T_NATIVE_FLOAT, memory_space.id(), file_space.id(), H5P_DEFAULT,
                out),
        file, what);
}

Object compound_type(const std::string& file, size_t size, std::initializer_list<Field> fields) {
  Object type(check(H5Tcreate(H5T_COMPOUND, size), file, "cannot create a compound type"), file);
  for (const Field& field : fields)
    check(H5Tinsert(type.id(), field.name, field.offset, field.type), file,
          std::string("cannot add compound field ") + field.name);
  return type;
}

Object write_table(const Object& loc, const std::string& path, const Object& type, size_t count,
                   const void* rows) {
  std::string name = object_name(loc, path);
  std::string what = "cannot write table " + name;
  Object space = dataspace(loc.file(), {hsize_t(count)});
  Object lcpl = link_creation_with_parents(loc.file());
  Object dataset(check(H5Dcreate2(loc.id(), path.c_str(), type.id(), space.id(), lcpl.id(),
                                  H5P_DEFAULT, H5P_DEFAULT),
                       loc.file(), what),
                 loc.file(), name);
  if (count > 0)
    check(H5Dwrite(dataset.id(), type.id(), H5S_ALL, H5S_ALL, H5P_DEFAULT, rows), loc.file(),
          what);
  return dataset;
}

void read_table(const Object& dataset, const Object& type, void* rows) {
  std::vector<int64_t> dims = dataset_dims(dataset);
  if (dims.size() != 1) fail("{}: {} is not a 1-D table", dataset.file(), dataset.path());
  if (dims[0] == 0) return;
  check(H5Dread(dataset.id(), type.id(), H5S_ALL, H5S_ALL, H5P_DEFAULT, rows), dataset.file(),
        "cannot read table " + dataset.path());
}

void set_int(const Object& obj, const std::string& name, int64_t value) {
  write_attribute(obj, name, H5T_STD_I64LE, H5T_NATIVE_INT64, {}, &value);
}

void set_ints(const Object& obj, const std::string& name, const std::vector<int64_t>& values) {
  write_attribute(obj, name, H5T_STD_I64LE, H5T_NATIVE_INT64, {hsize_t(values.size())},
                  values.data());
}

void set_float(const Object& obj, const std::string& name, double value) {
  write_attribute(obj, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, {}, &value);
}

void set_string(const Object& obj, const std::string& name, std::string_view value) {
  Object type = string_type(obj.file());
  std::string text(value);
  const char* pointer = text.c_str();
  write_attribute(obj, name, type.id(), type.id(), {}, &pointer);
}

int64_t get_int(const Object& obj, const std::string& name) {
  int64_t value = 0;
  read_attribute(obj, name, H5T_NATIVE_INT64, 1, &value);
  return value;
}

std::vector<int64_t> get_ints(const Object& obj, const std::string& name) {
  std::string what = "cannot read attribute " + name + " of " + label(obj);
  hssize_t size = attribute_size(open_attribute(obj, name), what);
  std::vector<int64_t> values(size_t(size), 0);
  read_attribute(obj, name, H5T_NATIVE_INT64, size, values.data());
  return values;
}

double get_float(const Object& obj, const std::string& name) {
  double value = 0;
  read_attribute(obj, name, H5T_NATIVE_DOUBLE, 1, &value);
  return value;
}

std::string get_string(const Object& obj, const std::string& name) {
  Object type = string_type(obj.file());
  char* pointer = nullptr;
  read_attribute(obj, name, type.id(), 1, &pointer);
  std::string text = pointer ? pointer : "";
  H5free_memory(pointer);
  return text;
}

std::vector<AttributeInfo> list_attributes(const Object& obj) {
  std::string what = "cannot list the attributes of " + label(obj);
  std::vector<std::string> names;
  check(H5Aiterate2(obj.id(), H5_INDEX_NAME, H5_ITER_INC, nullptr, collect_name, &names),
        obj.file(), what);
  std::vector<AttributeInfo> infos;
  for (const std::string& name : names) {
    Object attr = open_attribute(obj, name);
    Object type(check(H5Aget_type(attr.id()), obj.file(), what), obj.file());
    H5T_class_t type_class = H5Tget_class(type.id());
    check(int(type_class), obj.file(), what);
    AttributeKind kind = type_class == H5T_INTEGER ? AttributeKind::kInt
                         : type_class == H5T_FLOAT ? AttributeKind::kFloat
                                                   : AttributeKind::kOther;
    infos.push_back({name, kind});
  }
  return infos;
}

}  // namespace sigma::h5
