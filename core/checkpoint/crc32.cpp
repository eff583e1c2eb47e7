// CRC-32 (IEEE): reflected polynomial 0xEDB88320, initial value and final xor 0xFFFFFFFF.
#include "core/checkpoint/crc32.h"

#include "core/error.h"

#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <vector>

namespace sigma {

uint32_t crc32_update(uint32_t crc, const void* data, size_t size) {
  // zlib's CRC-32 (the one PNG uses too, core/report/png.cpp) takes z_size_t lengths.
  return uint32_t(::crc32_z(crc, static_cast<const Bytef*>(data), size));
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
