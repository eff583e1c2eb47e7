// Line charts and the expert-load heatmap (charts.h), drawn with image.h's primitives.
#include "core/report/charts.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace sigma::report {
namespace {

constexpr int kScale = 2;  // text at 10x14 pixels
constexpr int kTextHeight = kGlyphHeight * kScale;
constexpr Rgb kWhite{255, 255, 255}, kInk{30, 30, 30}, kGrid{228, 228, 228}, kAxis{150, 150, 150};
constexpr Rgb kBlue{33, 102, 172}, kRed{200, 40, 40}, kNoData{200, 200, 200};
// Distinct series colours, in order of use.
constexpr Rgb kPalette[] = {{33, 102, 172}, {230, 120, 20}, {40, 150, 70},  {200, 40, 40},
                            {120, 80, 170}, {20, 150, 150}, {140, 140, 30}, {110, 110, 110}};

Rgb mix(Rgb a, Rgb b, double t) {
  auto channel = [&](uint8_t x, uint8_t y) { return uint8_t(std::lround(x + (y - x) * t)); };
  return {channel(a.r, b.r), channel(a.g, b.g), channel(a.b, b.b)};
}

// Blue below a fair share, white at it, red above; log2 of the load clamped to +-2.
Rgb load_color(double load) {
  if (!std::isfinite(load)) return kNoData;
  double t = std::clamp(std::log2(std::max(load, 1e-9)), -2.0, 2.0) / 2;
  return t < 0 ? mix(kWhite, kBlue, -t) : mix(kWhite, kRed, t);
}

struct Range {
  double lo = std::numeric_limits<double>::infinity();
  double hi = -std::numeric_limits<double>::infinity();
  void add(double v) {
    if (std::isfinite(v)) lo = std::min(lo, v), hi = std::max(hi, v);
  }
  bool empty() const { return lo > hi; }
};

}  // namespace

std::vector<double> nice_ticks(double lo, double hi, int target, double min_spacing) {
  if (!(hi > lo)) {  // one value: a unit range around it
    double pad = lo == 0 ? 1 : std::fabs(lo) * 0.1;
    lo -= pad, hi += pad;
  }
  double raw = (hi - lo) / std::max(target, 1);
  double magnitude = std::pow(10, std::floor(std::log10(raw)));
  double normal = raw / magnitude;
  double spacing = (normal < 1.5 ? 1 : normal < 3.5 ? 2 : normal < 7.5 ? 5 : 10) * magnitude;
  spacing = std::max(spacing, min_spacing);
  double first = std::floor(lo / spacing), last = std::ceil(hi / spacing);
  std::vector<double> ticks;
  for (double i = first; i <= last; ++i) ticks.push_back(i == 0 ? 0.0 : i * spacing);
  return ticks;
}

std::string tick_text(double value, double spacing) {
  double a = std::fabs(value);
  if (a == 0) return "0";
  if (a >= 1e6 || a < 1e-3) return fmt::format("{:.3g}", value);
  int decimals = std::max(0, int(-std::floor(std::log10(spacing) + 1e-9)));
  return fmt::format("{:.{}f}", value, decimals);
}

Image render(const LineChart& chart, int width, int height) {
  Image image(width, height, kWhite);
  image.text(12, 10, chart.title, kInk, kScale);
  Range xs, ys;
  bool whole_x = true;  // steps and layers: no ticks between whole numbers
  for (const Series& series : chart.series)
    for (const auto& [x, y] : series.points) xs.add(x), ys.add(y), whole_x &= x == std::floor(x);
  if (xs.empty() || ys.empty()) {
    image.text(width / 2 - text_width("no data", kScale) / 2, height / 2, "no data", kAxis, kScale);
    return image;
  }
  std::vector<double> x_ticks = nice_ticks(xs.lo, xs.hi, 8, whole_x ? 1 : 0);
  std::vector<double> y_ticks = nice_ticks(ys.lo, ys.hi, 6);
  double x0 = x_ticks.front(), x1 = x_ticks.back(), y0 = y_ticks.front(), y1 = y_ticks.back();
  double x_spacing = x_ticks[1] - x_ticks[0], y_spacing = y_ticks[1] - y_ticks[0];
  int label_width = 0;
  for (double y : y_ticks)
    label_width = std::max(label_width, text_width(tick_text(y, y_spacing), kScale));
  int left = 12 + label_width + 10, right = width - 20, top = 40, bottom = height - 52;
  auto px = [&](double x) {
    return left + int(std::lround((x - x0) / (x1 - x0) * (right - left)));
  };
  auto py = [&](double y) {
    return bottom - int(std::lround((y - y0) / (y1 - y0) * (bottom - top)));
  };

  for (double y : y_ticks) {
    std::string text = tick_text(y, y_spacing);
    image.line(left, py(y), right, py(y), kGrid);
    image.text(left - 8 - text_width(text, kScale), py(y) - kTextHeight / 2, text, kInk, kScale);
  }
  for (double x : x_ticks) {
    std::string text = tick_text(x, x_spacing);
    image.line(px(x), top, px(x), bottom, kGrid);
    image.text(px(x) - text_width(text, kScale) / 2, bottom + 8, text, kInk, kScale);
  }
  image.text((left + right - text_width(chart.x_label, kScale)) / 2, bottom + 16 + kTextHeight,
             chart.x_label, kInk, kScale);
  for (const Marker& marker : chart.markers)
    if (marker.x >= x0 && marker.x <= x1)
      image.line(px(marker.x), top, px(marker.x), bottom, marker.color);
  image.line(left, bottom, right, bottom, kAxis);
  image.line(left, top, left, bottom, kAxis);

  for (size_t s = 0; s < chart.series.size(); ++s) {
    Rgb color = kPalette[s % std::size(kPalette)];
    const auto& points = chart.series[s].points;
    for (size_t i = 0; i < points.size(); ++i) {
      int x = px(points[i].first), y = py(points[i].second);
      if (points.size() <= 40) image.fill_rect(x - 3, y - 3, 7, 7, color);  // few: show each
      if (i > 0) image.line(px(points[i - 1].first), py(points[i - 1].second), x, y, color, 2);
    }
  }
  // The legend, top right, when there is more than one series (at most a dozen entries).
  if (chart.series.size() > 1) {
    size_t entries = std::min<size_t>(chart.series.size(), 12);
    int text_w = 0;
    for (size_t s = 0; s < entries; ++s)
      text_w = std::max(text_w, text_width(chart.series[s].name, kScale));
    int box_w = text_w + 34, box_h = int(entries) * (kTextHeight + 6) + 8;
    int bx = right - box_w - 6, by = top + 6;
    image.fill_rect(bx, by, box_w, box_h, kWhite);
    for (size_t s = 0; s < entries; ++s) {
      int y = by + 6 + int(s) * (kTextHeight + 6);
      image.fill_rect(bx + 6, y + 2, 16, kTextHeight - 4, kPalette[s % std::size(kPalette)]);
      image.text(bx + 28, y, chart.series[s].name, kInk, kScale);
    }
  }
  return image;
}

Image render(const Heatmap& heatmap) {
  int rows = int(heatmap.row_names.size()), columns = std::max(heatmap.columns, 1);
  int cell_w = std::clamp(760 / columns, 4, 40),
      cell_h = std::clamp(420 / std::max(rows, 1), 6, 28);
  // Labels at scale 2 where the cells are tall enough, else at scale 1, and only every
  // k-th one so that they never overlap.
  int row_scale = cell_h >= kTextHeight ? kScale : 1;
  int row_every = (kGlyphHeight * row_scale + 2 + cell_h - 1) / cell_h;
  int column_every = std::max(1, (text_width("000", kScale) + 8 + cell_w - 1) / cell_w);
  int label_w = 0;
  for (const std::string& name : heatmap.row_names)
    label_w = std::max(label_w, text_width(name, row_scale));
  int left = 12 + std::max(label_w, text_width(heatmap.row_label, kScale)) + 10, top = 64;
  int grid_w = columns * cell_w, grid_h = rows * cell_h;
  int bar_x = left + grid_w + 24, bar_h = std::max(grid_h, 120);
  int width = bar_x + 24 + text_width("1/4x", kScale) + 20;
  width = std::max(width, 12 + text_width(heatmap.title, kScale) + 12);
  Image image(width, top + std::max(grid_h, bar_h) + 56, kWhite);
  image.text(12, 10, heatmap.title, kInk, kScale);
  image.text(12, top - kTextHeight - 8, heatmap.row_label, kInk, kScale);

  for (int r = 0; r < rows; ++r) {
    for (int c = 0; c < columns; ++c) {
      double value = heatmap.values[size_t(r) * size_t(columns) + size_t(c)];
      image.fill_rect(left + c * cell_w, top + r * cell_h, cell_w, cell_h, load_color(value));
    }
    if (r % row_every == 0) {
      const std::string& name = heatmap.row_names[size_t(r)];
      image.text(left - 8 - text_width(name, row_scale),
                 top + r * cell_h + (cell_h - kGlyphHeight * row_scale) / 2, name, kInk, row_scale);
    }
  }
  for (int c = 0; c < columns; c += column_every) {
    std::string text = std::to_string(c);
    image.text(left + c * cell_w + (cell_w - text_width(text, kScale)) / 2, top + grid_h + 8, text,
               kInk, kScale);
  }
  image.text(left + (grid_w - text_width(heatmap.column_label, kScale)) / 2,
             top + grid_h + 16 + kTextHeight, heatmap.column_label, kInk, kScale);

  // The colour scale: 4x at the top, 1/4x at the bottom.
  for (int y = 0; y < bar_h; ++y)
    image.fill_rect(bar_x, top + y, 20, 1, load_color(std::exp2(2.0 - 4.0 * y / (bar_h - 1))));
  const char* labels[] = {"4x", "2x", "1x", "1/2x", "1/4x"};
  for (int i = 0; i < 5; ++i)
    image.text(bar_x + 26, top + i * (bar_h - 1) / 4 - kTextHeight / 2, labels[i], kInk, kScale);
  return image;
}

}  // namespace sigma::report
