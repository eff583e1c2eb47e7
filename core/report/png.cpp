// PNG encoding with zlib (RFC 2083): signature, IHDR, one IDAT, IEND. zlib is already on
// every machine that builds sigma (HDF5 links it), and deflate plus a CRC per chunk is all a
// PNG writer needs, so no PNG library is added. Each scanline gets filter 0 (none): charts
// are flat colours, which deflate compresses well without prediction.
#include "core/report/image.h"

#include "core/error.h"

#include <zlib.h>

namespace sigma::report {
namespace {

void put_u32(std::string& out, uint32_t value) {  // PNG integers are big-endian
  for (int shift = 24; shift >= 0; shift -= 8) out += char((value >> shift) & 0xFF);
}

void put_chunk(std::string& out, const char type[5], const std::string& data) {
  put_u32(out, uint32_t(data.size()));
  std::string body = std::string(type, 4) + data;
  out += body;
  // The CRC covers the type and the data (zlib's crc32 is PNG's).
  put_u32(out,
          uint32_t(::crc32(0, reinterpret_cast<const Bytef*>(body.data()), uInt(body.size()))));
}

}  // namespace

std::string Image::png() const {
  std::string raw;
  raw.reserve(size_t(height_) * (1 + 3 * size_t(width_)));
  for (int y = 0; y < height_; ++y) {
    raw += '\0';  // filter type 0
    for (int x = 0; x < width_; ++x) {
      Rgb p = at(x, y);
      raw += char(p.r), raw += char(p.g), raw += char(p.b);
    }
  }
  uLongf size = ::compressBound(uLong(raw.size()));
  std::string deflated(size, '\0');
  int status = ::compress2(reinterpret_cast<Bytef*>(deflated.data()), &size,
                           reinterpret_cast<const Bytef*>(raw.data()), uLong(raw.size()), 9);
  SIGMA_CHECK(status == Z_OK, "zlib compress2 returned {}", status);
  deflated.resize(size);

  std::string header;
  put_u32(header, uint32_t(width_));
  put_u32(header, uint32_t(height_));
  header += char(8);               // bit depth
  header += char(2);               // colour type: RGB
  header += std::string(3, '\0');  // deflate, adaptive filtering, no interlace

  std::string png = "\x89PNG\r\n\x1a\n";
  put_chunk(png, "IHDR", header);
  put_chunk(png, "IDAT", deflated);
  put_chunk(png, "IEND", "");
  return png;
}

}  // namespace sigma::report
