// Image: an RGB raster to draw charts on (rectangles, lines, 5x7 bitmap text), and its PNG
// encoding. Plain and small on purpose: a report needs a few charts, not a graphics library.
// Leaves out: anti-aliasing, alpha, fonts other than the built-in one (font.cpp).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace sigma::report {

struct Rgb {
  uint8_t r = 0, g = 0, b = 0;
};

inline constexpr int kGlyphWidth = 5, kGlyphHeight = 7;

// The width in pixels of `text` in the built-in font at `scale` (glyph pixels per pixel).
int text_width(std::string_view text, int scale);

class Image {
 public:
  Image(int width, int height, Rgb background);

  int width() const { return width_; }
  int height() const { return height_; }
  Rgb at(int x, int y) const { return pixels_[size_t(y) * size_t(width_) + size_t(x)]; }

  // Everything is clipped to the image.
  void fill_rect(int x, int y, int w, int h, Rgb color);
  // A line `thickness` pixels wide (a square pen moved along Bresenham's path).
  void line(int x0, int y0, int x1, int y1, Rgb color, int thickness = 1);
  // `text` with its top-left corner at (x, y), in the built-in font (font.cpp).
  void text(int x, int y, std::string_view text, Rgb color, int scale);

  // The PNG file's bytes: 8-bit RGB, no interlace, deflate by zlib (core/report/png.cpp).
  std::string png() const;

 private:
  int width_, height_;
  std::vector<Rgb> pixels_;
};

}  // namespace sigma::report
