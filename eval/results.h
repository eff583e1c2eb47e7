// Benchmark results: named metrics over a number of items, printed as a table and written as
// JSON ({"checkpoint", "step", "bench", "results": [{"task", "metric", "value", "n"}]}).
#pragma once

#include <cmath>
#include <map>
#include <string>
#include <vector>

namespace sigma {

struct MetricResult {
  std::string task, metric;
  double value = 0;
  int64_t n = 0;  // items the value averages over
};

// Averages per-item values of each metric; NaN marks "not applicable to this item".
class MetricAverager {
 public:
  void add(const std::string& metric, double value);
  // In the order metrics were first added.
  std::vector<MetricResult> results(const std::string& task) const;

 private:
  std::vector<std::string> order_;
  std::map<std::string, std::pair<double, int64_t>> sums_;
};

struct EvalReport {
  std::string checkpoint, bench;
  int64_t step = 0;
  std::vector<MetricResult> results;
};

std::string format_table(const EvalReport& report);
void write_json(const EvalReport& report, const std::string& path);

}  // namespace sigma
