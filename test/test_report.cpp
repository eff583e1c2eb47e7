// The report's drawing: tick choice, the built-in font, and PNG encoding (inflated back with
// zlib and compared with the drawn pixels). The whole report is test/integration/report.sh.
#include "core/report/charts.h"
#include "core/report/image.h"

#include <doctest/doctest.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

using namespace sigma::report;

namespace {

uint32_t be32(const std::string& bytes, size_t at) {
  return uint32_t(uint8_t(bytes[at])) << 24 | uint32_t(uint8_t(bytes[at + 1])) << 16 |
         uint32_t(uint8_t(bytes[at + 2])) << 8 | uint32_t(uint8_t(bytes[at + 3]));
}

bool same(const std::vector<double>& got, const std::vector<double>& want) {
  if (got.size() != want.size()) return false;
  for (size_t i = 0; i < got.size(); ++i)
    if (std::fabs(got[i] - want[i]) > 1e-12) return false;
  return true;
}

}  // namespace

TEST_CASE("report: ticks are 1, 2 or 5 times a power of ten and cover the range") {
  CHECK(same(nice_ticks(0.13, 0.91, 5), {0.0, 0.2, 0.4, 0.6, 0.8, 1.0}));
  CHECK(same(nice_ticks(3, 97, 8), {0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100}));
  CHECK(same(nice_ticks(1, 3, 8, 1), {1, 2, 3}));  // whole steps only
  std::vector<double> one = nice_ticks(5, 5, 6);   // a single value still gets a range
  CHECK(one.front() < 5);
  CHECK(one.back() > 5);
  CHECK(tick_text(0.5, 0.1) == "0.5");
  CHECK(tick_text(1200, 200) == "1200");
  CHECK(tick_text(3e-4, 1e-4) == "0.0003");
  CHECK(tick_text(2.5e7, 5e6) == "2.5e+07");
  CHECK(tick_text(0, 1) == "0");
}

TEST_CASE("report: the built-in font tells l from 1 and measures text") {
  CHECK(text_width("abc", 1) == 17);  // 3 glyphs of 5, 2 gaps of 1
  CHECK(text_width("abc", 2) == 34);
  CHECK(text_width("", 2) == 0);
  auto draw = [](const char* text) {
    Image image(6, 7, {255, 255, 255});
    image.text(0, 0, text, {0, 0, 0}, 1);
    std::vector<bool> on;
    for (int y = 0; y < 7; ++y)
      for (int x = 0; x < 5; ++x) on.push_back(image.at(x, y).r == 0);
    return on;
  };
  CHECK(draw("l") != draw("1"));
  CHECK(draw("0") != draw("O"));
  std::vector<bool> space = draw(" ");
  CHECK(std::count(space.begin(), space.end(), true) == 0);
  CHECK(draw("\x01") == draw("?"));  // outside printable ASCII
}

TEST_CASE("report: a PNG holds the drawn pixels, with valid chunk CRCs") {
  Image image(7, 3, {255, 255, 255});
  image.fill_rect(1, 1, 2, 1, {10, 20, 30});
  image.line(0, 0, 6, 2, {200, 0, 0});
  std::string png = image.png();
  REQUIRE(png.substr(0, 8) == "\x89PNG\r\n\x1a\n");
  std::string idat;
  size_t at = 8;
  std::vector<std::string> kinds;
  while (at < png.size()) {
    uint32_t length = be32(png, at);
    std::string kind = png.substr(at + 4, 4);
    std::string body = png.substr(at + 4, 4 + length);
    CHECK(be32(png, at + 8 + length) ==
          ::crc32(0, reinterpret_cast<const Bytef*>(body.data()), uInt(body.size())));
    if (kind == "IHDR") {
      CHECK(be32(png, at + 8) == 7);
      CHECK(be32(png, at + 12) == 3);
    }
    if (kind == "IDAT") idat += png.substr(at + 8, length);
    kinds.push_back(kind);
    at += 12 + length;
  }
  CHECK(kinds == std::vector<std::string>{"IHDR", "IDAT", "IEND"});
  std::string raw(3 * (1 + 3 * 7), '\0');
  uLongf size = raw.size();
  REQUIRE(::uncompress(reinterpret_cast<Bytef*>(raw.data()), &size,
                       reinterpret_cast<const Bytef*>(idat.data()), idat.size()) == Z_OK);
  CHECK(size == raw.size());
  for (int y = 0; y < 3; ++y) {
    CHECK(raw[size_t(y) * 22] == 0);  // filter: none
    for (int x = 0; x < 7; ++x) {
      const char* p = raw.data() + size_t(y) * 22 + 1 + size_t(x) * 3;
      Rgb want = image.at(x, y);
      CHECK(uint8_t(p[0]) == want.r);
      CHECK(uint8_t(p[1]) == want.g);
      CHECK(uint8_t(p[2]) == want.b);
    }
  }
  CHECK(image.at(1, 1).r == 10);
  CHECK(image.at(0, 0).r == 200);
  CHECK(image.at(6, 2).r == 200);
}
