// Charts for `sigma report`: line charts of metrics over steps and a heatmap of expert load,
// rendered to Images (image.h). Axes get "nice" ticks (1, 2 or 5 times a power of ten).
// Leaves out: log axes, zooming, anything interactive (the report is static on purpose).
#pragma once

#include "core/report/image.h"

#include <string>
#include <utility>
#include <vector>

namespace sigma::report {

struct Series {
  std::string name;
  std::vector<std::pair<double, double>> points;  // (x, y), x ascending
};

// A vertical line at x, for an event (a skipped step, a rollback).
struct Marker {
  double x = 0;
  Rgb color;
};

struct LineChart {
  std::string title;
  std::string x_label = "step";
  std::vector<Series> series;  // coloured from a fixed palette, in order
  std::vector<Marker> markers;
};

// A grid of values; each cell is a load relative to a uniform share (1 = fair share), drawn
// on a blue (idle) - white (fair) - red (overloaded) scale, log2 clamped to [1/4, 4].
struct Heatmap {
  std::string title;
  std::string row_label, column_label;
  std::vector<std::string> row_names;
  int columns = 0;
  std::vector<double> values;  // row-major, row_names.size() * columns
};

Image render(const LineChart& chart, int width = 820, int height = 340);
Image render(const Heatmap& heatmap);

// "nice" tick values covering [lo, hi], about `target` of them, at least `min_spacing` apart.
std::vector<double> nice_ticks(double lo, double hi, int target, double min_spacing = 0);
// A tick's text: as few digits as the tick spacing needs ("0.5", "1200", "3e-04").
std::string tick_text(double value, double spacing);

}  // namespace sigma::report
