// TFRecord framing and the few tensorflow.Event fields TensorBoard needs (tensorboard.h).
#include "core/train/tensorboard.h"

#include "core/error.h"

#include <fmt/format.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstring>
#include <filesystem>

namespace sigma {
namespace {

constexpr std::array<uint32_t, 256> make_crc32c_table() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int bit = 0; bit < 8; ++bit) c = (c & 1) ? 0x82F63B78u ^ (c >> 1) : c >> 1;
    table[i] = c;
  }
  return table;
}

constexpr std::array<uint32_t, 256> kCrc32cTable = make_crc32c_table();

// TFRecord stores a rotated and offset CRC, so that a CRC of bytes that hold CRCs is safe.
uint32_t masked_crc32c(const void* data, size_t size) {
  uint32_t crc = crc32c(data, size);
  return ((crc >> 15) | (crc << 17)) + 0xA282EAD8u;
}

// Protobuf wire format: a key is (field << 3) | wire type; integers are little-endian.
enum WireType : uint64_t { kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5 };

void put_varint(std::string& out, uint64_t value) {
  while (value >= 0x80) {
    out += char((value & 0x7F) | 0x80);
    value >>= 7;
  }
  out += char(value);
}

void put_key(std::string& out, int field, WireType type) {
  put_varint(out, (uint64_t(field) << 3) | type);
}

template <typename T>
void put_fixed(std::string& out, T value) {
  char bytes[sizeof(T)];
  std::memcpy(bytes, &value, sizeof(T));  // x86-64 and arm64 are little-endian
  out.append(bytes, sizeof(T));
}

void put_bytes(std::string& out, int field, std::string_view bytes) {
  put_key(out, field, kLengthDelimited);
  put_varint(out, bytes.size());
  out += bytes;
}

std::string event_header(int64_t step) {
  std::string event;
  double wall_time =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  put_key(event, 1, kFixed64);
  put_fixed(event, wall_time);
  put_key(event, 2, kVarint);
  put_varint(event, uint64_t(step));
  return event;
}

std::string host_name() {
  char name[256] = {};
  if (::gethostname(name, sizeof(name) - 1) != 0) return "host";
  return name;
}

}  // namespace

uint32_t crc32c(const void* data, size_t size) {
  const auto* bytes = static_cast<const unsigned char*>(data);
  uint32_t c = ~0u;
  for (size_t i = 0; i < size; ++i) c = kCrc32cTable[(c ^ bytes[i]) & 0xFF] ^ (c >> 8);
  return ~c;
}

TensorBoardWriter::TensorBoardWriter(const std::string& dir, int64_t restart_step) {
  auto now = std::chrono::system_clock::now().time_since_epoch();
  int64_t micros = std::chrono::duration_cast<std::chrono::microseconds>(now).count();
  path_ = (std::filesystem::path(dir) / fmt::format("events.out.tfevents.{:010}.{:06}.{}.{}",
                                                    micros / 1000000, micros % 1000000, host_name(),
                                                    ::getpid()))
              .string();
  file_ = std::fopen(path_.c_str(), "wb");
  if (!file_) fail("cannot write {}: {}", path_, std::strerror(errno));
  std::string version = event_header(0);
  put_bytes(version, 3, "brain.Event:2");
  record(version);
  if (restart_step > 0) {
    std::string session_log;
    put_key(session_log, 1, kVarint);
    put_varint(session_log, 1);  // SessionLog.START
    std::string restart = event_header(restart_step);
    put_bytes(restart, 7, session_log);
    record(restart);
  }
  std::fflush(file_);
}

TensorBoardWriter::~TensorBoardWriter() {
  if (file_) std::fclose(file_);
}

void TensorBoardWriter::scalars(int64_t step,
                                const std::vector<std::pair<std::string, double>>& values) {
  std::string summary;
  for (const auto& [tag, value] : values) {
    std::string entry;
    put_bytes(entry, 1, tag);
    put_key(entry, 2, kFixed32);
    put_fixed(entry, float(value));
    put_bytes(summary, 1, entry);
  }
  std::string event = event_header(step);
  put_bytes(event, 5, summary);
  record(event);
  std::fflush(file_);
}

void TensorBoardWriter::record(std::string_view event) {
  std::string framed;
  uint64_t length = event.size();
  put_fixed(framed, length);
  put_fixed(framed, masked_crc32c(framed.data(), sizeof(length)));
  framed += event;
  put_fixed(framed, masked_crc32c(event.data(), event.size()));
  std::fwrite(framed.data(), 1, framed.size(), file_);
}

}  // namespace sigma
