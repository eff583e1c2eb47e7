#include "eval/results.h"

#include "core/error.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>

namespace sigma {

void MetricAverager::add(const std::string& metric, double value) {
  if (!sums_.count(metric)) order_.push_back(metric);
  auto& [sum, n] = sums_[metric];
  if (std::isnan(value)) return;
  sum += value;
  n += 1;
}

std::vector<MetricResult> MetricAverager::results(const std::string& task) const {
  std::vector<MetricResult> out;
  for (const std::string& metric : order_) {
    auto [sum, n] = sums_.at(metric);
    out.push_back({task, metric, n > 0 ? sum / double(n) : std::nan(""), n});
  }
  return out;
}

std::string format_table(const EvalReport& r) {
  size_t task_w = 4, metric_w = 6;
  for (const MetricResult& m : r.results) {
    task_w = std::max(task_w, m.task.size());
    metric_w = std::max(metric_w, m.metric.size());
  }
  std::string out = fmt::format("{} (step {}), bench {}\n", r.checkpoint, r.step, r.bench);
  out += fmt::format("  {:<{}}  {:<{}}  {:>12}  {:>6}\n", "task", task_w, "metric", metric_w,
                     "value", "n");
  for (const MetricResult& m : r.results)
    out += fmt::format("  {:<{}}  {:<{}}  {:>12.4f}  {:>6}\n", m.task, task_w, m.metric, metric_w,
                       m.value, m.n);
  return out;
}

void write_json(const EvalReport& r, const std::string& path) {
  nlohmann::json results = nlohmann::json::array();
  for (const MetricResult& m : r.results) {
    nlohmann::json row = {{"task", m.task}, {"metric", m.metric}, {"n", m.n}};
    row["value"] = std::isnan(m.value) ? nlohmann::json(nullptr) : nlohmann::json(m.value);
    results.push_back(row);
  }
  nlohmann::json doc = {
      {"checkpoint", r.checkpoint}, {"step", r.step}, {"bench", r.bench}, {"results", results}};
  std::ofstream out(path, std::ios::trunc);
  out << doc.dump(2) << "\n";
  if (!out) fail("cannot write {}", path);
}

}  // namespace sigma
