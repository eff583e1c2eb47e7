// Image drawing: rectangles and thick lines (text is in font.cpp, PNG in png.cpp).
#include "core/report/image.h"

#include "core/error.h"

#include <algorithm>
#include <cstdlib>

namespace sigma::report {

Image::Image(int width, int height, Rgb background)
    : width_(width), height_(height), pixels_(size_t(width) * size_t(height), background) {
  SIGMA_CHECK(width > 0 && height > 0, "image {}x{}", width, height);
}

void Image::fill_rect(int x, int y, int w, int h, Rgb color) {
  int x0 = std::max(x, 0), y0 = std::max(y, 0);
  int x1 = std::min(x + w, width_), y1 = std::min(y + h, height_);
  for (int yy = y0; yy < y1; ++yy)
    std::fill_n(pixels_.begin() + ptrdiff_t(size_t(yy) * size_t(width_) + size_t(x0)),
                std::max(0, x1 - x0), color);
}

void Image::line(int x0, int y0, int x1, int y1, Rgb color, int thickness) {
  int dx = std::abs(x1 - x0), dy = -std::abs(y1 - y0);
  int sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1;
  int error = dx + dy, half = thickness / 2;
  while (true) {
    fill_rect(x0 - half, y0 - half, thickness, thickness, color);
    if (x0 == x1 && y0 == y1) break;
    int twice = 2 * error;
    if (twice >= dy) error += dy, x0 += sx;
    if (twice <= dx) error += dx, y0 += sy;
  }
}

}  // namespace sigma::report
