// CRC-32 (IEEE 802.3, the polynomial of zlib, gzip and PNG) of memory and of whole files.
//
// Checkpoints store one per rank file so a corrupt or truncated file is caught before it
// is loaded. zlib computes it (already a dependency: PNG output).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace sigma {

// Continues a CRC over `size` more bytes; start with crc = 0. crc32("123456789") == 0xCBF43926.
uint32_t crc32_update(uint32_t crc, const void* data, size_t size);

struct FileDigest {
  int64_t bytes = 0;
  uint32_t crc32 = 0;
};

// The size and CRC-32 of a file's bytes. Throws UserError naming the file if it cannot be read.
FileDigest digest_file(const std::string& path);

}  // namespace sigma
