// Megatron-LM indexed datasets: the memory-mapped reader with full validation, and the
// streaming writer. The byte layout is spelled out in indexed_dataset.h; this file checks
// every field of it, because a corrupt index would otherwise become a wild read in training.
// Leaves out: Megatron's multimodal sequence modes and float token dtypes.
#include "core/data/indexed_dataset.h"

#include "core/error.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

namespace sigma {

static_assert(std::endian::native == std::endian::little,
              "the MMIDIDX format is little-endian; a big-endian host would need byte swaps");

namespace {

constexpr unsigned char kMagic[9] = {'M', 'M', 'I', 'D', 'I', 'D', 'X', 0, 0};
constexpr uint64_t kVersion = 1;
constexpr size_t kHeaderBytes = 9 + 8 + 1 + 8 + 8;  // magic, version, dtype, two counts

// Token width of each Megatron dtype code (0: not a token dtype we read).
size_t dtype_bytes(int code) {
  switch (code) {
    case 1: case 2: return 1;   // u8, i8
    case 3: case 8: return 2;   // i16, u16
    case 4: return 4;           // i32
    case 5: return 8;           // i64
    default: return 0;          // 6 f64, 7 f32, or unknown
  }
}

template <typename T>
T load(const unsigned char* p) {
  T value;
  std::memcpy(&value, p, sizeof(T));
  return value;
}

// Maps a whole file read-only. An empty file maps to (nullptr, 0): mmap rejects length 0.
const unsigned char* map_file(const std::string& path, size_t& size) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("{}: cannot open: {}", path, std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    fail("{}: cannot stat: {}", path, std::strerror(err));
  }
  size = size_t(st.st_size);
  void* data = nullptr;
  if (size > 0) {
    data = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
    if (data == MAP_FAILED) {
      int err = errno;
      ::close(fd);
      fail("{}: cannot map: {}", path, std::strerror(err));
    }
  }
  ::close(fd);  // the mapping keeps the file alive
  return static_cast<const unsigned char*>(data);
}

void unmap(const unsigned char* data, size_t size) {
  if (data) ::munmap(const_cast<unsigned char*>(data), size);
}

}  // namespace

IndexedDataset::IndexedDataset(const std::string& prefix) : prefix_(prefix) {
  const std::string idx_path = prefix + ".idx", bin_path = prefix + ".bin";
  for (const std::string& path : {idx_path, bin_path})
    if (!std::filesystem::exists(path)) fail("data source {}: {} not found", prefix, path);

  try {
    idx_ = map_file(idx_path, idx_size_);
    bin_ = map_file(bin_path, bin_size_);

    if (idx_size_ < kHeaderBytes)
      fail("{}: truncated: {} bytes, shorter than the {}-byte header", idx_path, idx_size_,
           kHeaderBytes);
    if (std::memcmp(idx_, kMagic, sizeof(kMagic)) != 0)
      fail("{}: not a Megatron indexed dataset index (bad magic)", idx_path);
    uint64_t version = load<uint64_t>(idx_ + 9);
    if (version != kVersion)
      fail("{}: format version {} is not supported (only {})", idx_path, version, kVersion);
    dtype_code_ = idx_[17];
    token_bytes_ = dtype_bytes(dtype_code_);
    if (token_bytes_ == 0)
      fail("{}: dtype code {} is not an integer token type (1-5 or 8)", idx_path, dtype_code_);
    uint64_t n = load<uint64_t>(idx_ + 18), m = load<uint64_t>(idx_ + 26);

    // Each count is bounded by the file size first, so the byte arithmetic cannot overflow.
    uint64_t body = idx_size_ - kHeaderBytes;
    if (m > body / 8 || n > (body - 8 * m) / 12) {
      uint64_t room = m > body / 8 ? 0 : (body - 8 * m) / 12;
      fail("{}: truncated: header says {} sequences and {} document indices but the file has "
           "room for {} sequences",
           idx_path, n, m, room);
    }
    if (uint64_t expected = kHeaderBytes + 12 * n + 8 * m; expected != idx_size_)
      fail("{}: {} bytes, but the header's {} sequences and {} document indices need {}",
           idx_path, idx_size_, n, m, expected);
    if (m < 1) fail("{}: no document indices (need at least the leading 0)", idx_path);
    num_sequences_ = int64_t(n);
    num_doc_indices_ = int64_t(m);
    lengths_ = idx_ + kHeaderBytes;
    pointers_ = lengths_ + 4 * n;
    doc_index_ = pointers_ + 8 * n;

    for (int64_t i = 0; i < num_sequences_; ++i) {
      int32_t length = load<int32_t>(lengths_ + 4 * i);
      int64_t pointer = sequence_pointer(i);
      if (length < 0) fail("{}: sequence {} has negative length {}", idx_path, i, length);
      if (pointer < 0 || uint64_t(pointer) > bin_size_ ||
          uint64_t(length) * token_bytes_ > bin_size_ - uint64_t(pointer))
        fail("{}: sequence {} ({} tokens at byte {}) runs past the end of {} ({} bytes)",
             idx_path, i, length, pointer, bin_path, bin_size_);
      total_tokens_ += length;
    }
    int64_t previous = 0;
    for (int64_t j = 0; j < num_doc_indices_; ++j) {
      int64_t first = document_begin(j);
      if (j == 0 && first != 0) fail("{}: document indices start at {}, not 0", idx_path, first);
      if (first < previous || first > num_sequences_)
        fail("{}: document index {} is {}, out of order (previous {}, {} sequences)", idx_path,
             j, first, previous, num_sequences_);
      previous = first;
    }
    if (previous != num_sequences_)
      fail("{}: document indices end at sequence {}, but there are {} sequences", idx_path,
           previous, num_sequences_);
  } catch (...) {
    unmap(idx_, idx_size_);
    unmap(bin_, bin_size_);
    throw;
  }
}

IndexedDataset::~IndexedDataset() {
  unmap(idx_, idx_size_);
  unmap(bin_, bin_size_);
}

int64_t IndexedDataset::sequence_length(int64_t i) const {
  return load<int32_t>(lengths_ + 4 * i);
}

int64_t IndexedDataset::sequence_pointer(int64_t i) const {
  return load<int64_t>(pointers_ + 8 * i);
}

int64_t IndexedDataset::document_begin(int64_t d) const {
  return load<int64_t>(doc_index_ + 8 * d);
}

int64_t IndexedDataset::document_length(int64_t d) const {
  int64_t tokens = 0;
  for (int64_t s = document_begin(d); s < document_begin(d + 1); ++s) tokens += sequence_length(s);
  return tokens;
}

void IndexedDataset::read(int64_t i, int64_t offset, int64_t count, int32_t* out) const {
  SIGMA_CHECK(i >= 0 && i < num_sequences_ && offset >= 0 && count >= 0 &&
                  offset + count <= sequence_length(i),
              "{}: read of sequence {} [{}, +{}) of {}", prefix_, i, offset, count,
              num_sequences_);
  const unsigned char* p = bin_ + sequence_pointer(i) + offset * int64_t(token_bytes_);
  switch (dtype_code_) {
    case 1: for (int64_t k = 0; k < count; ++k) out[k] = load<uint8_t>(p + k); break;
    case 2: for (int64_t k = 0; k < count; ++k) out[k] = load<int8_t>(p + k); break;
    case 3: for (int64_t k = 0; k < count; ++k) out[k] = load<int16_t>(p + 2 * k); break;
    case 8: for (int64_t k = 0; k < count; ++k) out[k] = load<uint16_t>(p + 2 * k); break;
    case 4: std::memcpy(out, p, size_t(count) * 4); break;
    case 5: for (int64_t k = 0; k < count; ++k) out[k] = int32_t(load<int64_t>(p + 8 * k)); break;
  }
}

void IndexedDataset::read_document(int64_t d, int64_t offset, int64_t count, int32_t* out) const {
  for (int64_t s = document_begin(d); count > 0 && s < document_begin(d + 1); ++s) {
    int64_t length = sequence_length(s);
    if (offset >= length) {
      offset -= length;
      continue;
    }
    int64_t take = std::min(count, length - offset);
    read(s, offset, take, out);
    out += take;
    count -= take;
    offset = 0;
  }
  SIGMA_CHECK(count == 0, "{}: document {} is too short for the read", prefix_, d);
}

IndexedDatasetWriter::IndexedDatasetWriter(const std::string& prefix, int64_t vocab_size)
    : prefix_(prefix),
      vocab_size_(vocab_size),
      dtype_code_(vocab_size <= 65536 ? 8 : 4),
      token_bytes_(vocab_size <= 65536 ? 2 : 4) {
  std::filesystem::path parent = std::filesystem::path(prefix).parent_path();
  std::error_code ec;
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  // A stale index beside the .bin we are about to rewrite would look valid if we died early.
  std::filesystem::remove(prefix + ".idx", ec);
  bin_.open(prefix + ".bin", std::ios::binary | std::ios::trunc);
  if (!bin_) fail("{}.bin: cannot write: {}", prefix, std::strerror(errno));
}

void IndexedDatasetWriter::add_document(const std::vector<int32_t>& tokens) {
  SIGMA_CHECK(!finished_, "{}: add_document after finish", prefix_);
  if (tokens.size() > size_t(INT32_MAX))
    fail("{}: a document of {} tokens exceeds the format's limit of {} per sequence", prefix_,
         tokens.size(), INT32_MAX);
  scratch_.resize(tokens.size() * token_bytes_);
  for (size_t k = 0; k < tokens.size(); ++k) {
    int32_t t = tokens[k];
    SIGMA_CHECK(t >= 0 && t < vocab_size_, "token {} outside the vocabulary of {}", t, vocab_size_);
    if (token_bytes_ == 2) {
      uint16_t v = uint16_t(t);
      std::memcpy(&scratch_[2 * k], &v, 2);
    } else {
      std::memcpy(&scratch_[4 * k], &t, 4);
    }
  }
  pointers_.push_back(total_tokens_ * int64_t(token_bytes_));
  lengths_.push_back(int32_t(tokens.size()));
  total_tokens_ += int64_t(tokens.size());
  bin_.write(reinterpret_cast<const char*>(scratch_.data()), std::streamsize(scratch_.size()));
  if (!bin_) fail("{}.bin: write failed: {}", prefix_, std::strerror(errno));
}

void IndexedDatasetWriter::finish() {
  SIGMA_CHECK(!finished_, "{}: finish called twice", prefix_);
  finished_ = true;
  bin_.close();
  if (!bin_) fail("{}.bin: write failed: {}", prefix_, std::strerror(errno));
  // The tokens must be on disk before an index that points at them can appear.
  int bin_fd = ::open((prefix_ + ".bin").c_str(), O_RDONLY | O_CLOEXEC);
  bool synced = bin_fd >= 0 && ::fsync(bin_fd) == 0;
  if (bin_fd >= 0) ::close(bin_fd);
  if (!synced) fail("{}.bin: cannot sync: {}", prefix_, std::strerror(errno));

  const std::string path = prefix_ + ".idx", tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) fail("{}: cannot write: {}", tmp, std::strerror(errno));
  auto put = [&](const void* data, size_t bytes) {
    if (bytes > 0 && std::fwrite(data, 1, bytes, f) != bytes) {
      std::fclose(f);
      fail("{}: write failed: {}", tmp, std::strerror(errno));
    }
  };
  uint64_t n = lengths_.size();
  uint8_t code = uint8_t(dtype_code_);
  put(kMagic, sizeof(kMagic));
  put(&kVersion, 8);
  put(&code, 1);
  put(&n, 8);
  uint64_t m = n + 1;  // one document per sequence: 0, 1, ..., n
  put(&m, 8);
  put(lengths_.data(), 4 * n);
  put(pointers_.data(), 8 * n);
  for (uint64_t j = 0; j <= n; ++j) {
    int64_t first = int64_t(j);
    put(&first, 8);
  }
  bool ok = std::fflush(f) == 0 && ::fsync(::fileno(f)) == 0;
  ok = std::fclose(f) == 0 && ok;
  if (!ok) fail("{}: write failed: {}", tmp, std::strerror(errno));
  if (std::rename(tmp.c_str(), path.c_str()) != 0)
    fail("{}: cannot rename to {}: {}", tmp, path, std::strerror(errno));
}

}  // namespace sigma
