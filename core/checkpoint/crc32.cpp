// CRC-32 (IEEE): reflected polynomial 0xEDB88320, initial value and final xor 0xFFFFFFFF.
#include "core/checkpoint/crc32.h"

#include "core/error.h"

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <vector>

namespace sigma {
namespace {

constexpr std::array<uint32_t, 256> make_table() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int bit = 0; bit < 8; ++bit) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    table[i] = c;
  }
  return table;
}

constexpr std::array<uint32_t, 256> kTable = make_table();

}  // namespace

uint32_t crc32_update(uint32_t crc, const void* data, size_t size) {
  const auto* bytes = static_cast<const unsigned char*>(data);
  uint32_t c = ~crc;
  for (size_t i = 0; i < size; ++i) c = kTable[(c ^ bytes[i]) & 0xFF] ^ (c >> 8);
  return ~c;
}

FileDigest digest_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("{}: cannot open for reading: {}", path, std::strerror(errno));
  std::vector<char> chunk(size_t(4) << 20);
  FileDigest digest;
  while (true) {
    ssize_t n = ::read(fd, chunk.data(), chunk.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int error = errno;
      ::close(fd);
      fail("{}: read failed: {}", path, std::strerror(error));
    }
    if (n == 0) break;
    digest.crc32 = crc32_update(digest.crc32, chunk.data(), size_t(n));
    digest.bytes += n;
  }
  ::close(fd);
  return digest;
}

}  // namespace sigma
