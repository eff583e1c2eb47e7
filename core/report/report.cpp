// Building the report: metrics.jsonl -> curves -> charts -> PNGs and one HTML file.
#include "core/report/report.h"

#include "core/error.h"
#include "core/report/charts.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

namespace sigma {
namespace fs = std::filesystem;
using report::Heatmap;
using report::LineChart;
using report::Marker;
using report::Series;

namespace {

using Rows = std::vector<nlohmann::json>;

// Every parsable row; a row cut short by a crash is skipped.
Rows read_rows(const fs::path& path) {
  std::ifstream in(path);
  if (!in) fail("{}: cannot be read; is the directory a run directory?", path.string());
  Rows rows;
  for (std::string line; std::getline(in, line);) {
    nlohmann::json row = nlohmann::json::parse(line, nullptr, false);
    if (row.is_object() && row.contains("step") && row["step"].is_number()) rows.push_back(row);
  }
  return rows;
}

// The curve of `key` over the step rows, scaled by `factor`. A step at or before the last
// one seen means the run went back (resume, rollback): the points from there on are dropped.
std::vector<std::pair<double, double>> curve(const Rows& rows, const std::string& key,
                                             double factor = 1) {
  std::vector<std::pair<double, double>> points;
  for (const nlohmann::json& row : rows) {
    if (row.contains("event") || !row.contains(key) || !row[key].is_number()) continue;
    double step = row["step"].get<double>();
    while (!points.empty() && points.back().first >= step) points.pop_back();
    points.emplace_back(step, row[key].get<double>() * factor);
  }
  return points;
}

// The layer indices l of the keys "<prefix>l<l>.<suffix>" in the newest row that has any.
std::vector<int> layers_with(const Rows& rows, const std::string& prefix,
                             const std::string& suffix) {
  std::vector<int> layers;
  std::regex pattern(std::regex_replace(prefix, std::regex(R"(\.)"), R"(\.)") + R"(l(\d+)\.)" +
                     suffix);
  for (auto it = rows.rbegin(); it != rows.rend() && layers.empty(); ++it) {
    if (it->contains("event")) continue;
    for (const auto& item : it->items()) {
      std::smatch match;
      const std::string& key = item.key();
      if (std::regex_match(key, match, pattern)) layers.push_back(std::stoi(match[1]));
    }
  }
  std::sort(layers.begin(), layers.end());
  return layers;
}

LineChart per_layer(const Rows& rows, const std::string& title, const std::string& prefix,
                    const std::string& suffix) {
  LineChart chart{title, "step", {}, {}};
  for (int l : layers_with(rows, prefix, suffix))
    chart.series.push_back(
        {fmt::format("l{}", l), curve(rows, fmt::format("{}l{}.{}", prefix, l, suffix))});
  return chart;
}

// Parameter norm by depth at the last step row that has them: x = layer.
LineChart depth_profile(const Rows& rows) {
  LineChart chart{"parameter norm by depth, last logged step", "layer", {{"norm", {}}}, {}};
  std::vector<int> layers = layers_with(rows, "layers.", "param_norm");
  for (auto it = rows.rbegin(); it != rows.rend() && !layers.empty(); ++it) {
    if (it->contains("event") || !it->contains(fmt::format("layers.l{}.param_norm", layers[0])))
      continue;
    for (int l : layers)
      chart.series[0].points.emplace_back(
          l, (*it)[fmt::format("layers.l{}.param_norm", l)].get<double>());
    chart.title += fmt::format(" ({})", (*it)["step"].get<int64_t>());
    break;
  }
  return chart;
}

// Tokens per expert summed over the last tenth of the expert-load rows (at least one), per
// MoE layer, relative to a fair share.
Heatmap expert_load(const Rows& rows) {
  Heatmap heatmap{"", "layer", "expert", {}, 0, {}};
  std::vector<int> layers = layers_with(rows, "moe.", "tokens_per_expert");
  std::vector<const nlohmann::json*> logged;
  for (const nlohmann::json& row : rows)
    if (!row.contains("event") && !layers.empty() &&
        row.contains(fmt::format("moe.l{}.tokens_per_expert", layers[0])))
      logged.push_back(&row);
  if (logged.empty()) return heatmap;
  size_t window = std::max<size_t>(1, logged.size() / 10);
  int64_t first = (*logged[logged.size() - window])["step"], last = (*logged.back())["step"];
  heatmap.title = fmt::format("tokens per expert / fair share, steps {}-{}", first, last);
  for (int l : layers) {
    std::vector<double> sums;
    for (size_t i = logged.size() - window; i < logged.size(); ++i) {
      const nlohmann::json& counts = (*logged[i])[fmt::format("moe.l{}.tokens_per_expert", l)];
      sums.resize(std::max(sums.size(), counts.size()), 0.0);
      for (size_t e = 0; e < counts.size(); ++e) sums[e] += counts[e].get<double>();
    }
    double total = 0;
    for (double s : sums) total += s;
    heatmap.columns = std::max(heatmap.columns, int(sums.size()));
    heatmap.row_names.push_back(fmt::format("l{}", l));
    for (double s : sums)
      heatmap.values.push_back(total > 0 ? s * double(sums.size()) / total : NAN);
  }
  return heatmap;
}

std::string base64(const std::string& bytes) {
  static const char kDigits[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  for (size_t i = 0; i < bytes.size(); i += 3) {
    uint32_t n = uint32_t(uint8_t(bytes[i])) << 16;
    if (i + 1 < bytes.size()) n |= uint32_t(uint8_t(bytes[i + 1])) << 8;
    if (i + 2 < bytes.size()) n |= uint32_t(uint8_t(bytes[i + 2]));
    out += kDigits[n >> 18 & 63];
    out += kDigits[n >> 12 & 63];
    out += i + 1 < bytes.size() ? kDigits[n >> 6 & 63] : '=';
    out += i + 2 < bytes.size() ? kDigits[n & 63] : '=';
  }
  return out;
}

std::string html_escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

void write_file(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
  if (!out) fail("{}: cannot be written", path.string());
}

// The events (rows with an "event" key) as an HTML table, newest last.
std::string events_table(const Rows& rows) {
  std::string table;
  for (const nlohmann::json& row : rows) {
    if (!row.contains("event") || row["event"] == "checkpoint") continue;
    nlohmann::json rest = row;
    rest.erase("event");
    rest.erase("step");
    table +=
        fmt::format("<tr><td>{}</td><td>{}</td><td><code>{}</code></td></tr>\n", row["step"].dump(),
                    html_escape(row["event"].get<std::string>()), html_escape(rest.dump()));
  }
  if (table.empty()) return "<p>No guard events, warnings or preemptions.</p>\n";
  return "<table><tr><th>step</th><th>event</th><th>details</th></tr>\n" + table + "</table>\n";
}

}  // namespace

ReportFiles write_report(const std::string& run_dir, const std::string& out_dir) {
  fs::path run(run_dir);
  Rows rows = read_rows(run / "metrics.jsonl");
  std::vector<Marker> markers;
  int64_t skips = 0, rollbacks = 0, warnings = 0, checkpoints = 0;
  for (const nlohmann::json& row : rows) {
    std::string event = row.value("event", "");
    double step = row["step"].get<double>();
    if (event == "guard.skip") ++skips, markers.push_back({step, {230, 150, 40}});
    if (event == "guard.rollback") ++rollbacks, markers.push_back({step, {200, 40, 40}});
    if (event.starts_with("warning.")) ++warnings;
    if (event == "checkpoint") ++checkpoints;
  }

  std::vector<std::pair<std::string, report::Image>> charts;
  auto add = [&](const std::string& name, const LineChart& chart) {
    bool any = std::any_of(chart.series.begin(), chart.series.end(),
                           [](const Series& s) { return !s.points.empty(); });
    if (any) charts.emplace_back(name, report::render(chart));
  };
  add("loss", {"loss; guard events marked (orange: skipped step, red: rollback)",
               "step",
               {{"train", curve(rows, "loss")}, {"validation", curve(rows, "valid_loss")}},
               markers});
  add("lr", {"learning rate", "step", {{"lr", curve(rows, "lr")}}, {}});
  add("grad_norm",
      {"gradient norm (before clipping)", "step", {{"grad norm", curve(rows, "grad_norm")}}, {}});
  add("tok_per_s", {"tokens per second", "step", {{"tok/s", curve(rows, "tok_per_s")}}, {}});
  add("mfu", {"MFU (%)", "step", {{"MFU", curve(rows, "mfu", 100)}}, {}});
  add("moe_max_dev",
      per_layer(rows, "MoE: busiest expert, % above a fair share", "moe.", "max_dev_pct"));
  add("aux_loss", {"MoE: balancing loss", "step", {{"aux", curve(rows, "aux_loss")}}, {}});
  add("param_norm", per_layer(rows, "parameter norm per layer", "layers.", "param_norm"));
  add("grad_norm_layers", per_layer(rows, "gradient norm per layer", "layers.", "grad_norm"));
  add("norm_by_depth", depth_profile(rows));
  Heatmap load = expert_load(rows);
  if (!load.row_names.empty()) charts.emplace_back("expert_load", report::render(load));

  fs::path out(out_dir);
  std::error_code error;
  fs::create_directories(out, error);
  if (error) fail("{}: cannot create the report directory: {}", out.string(), error.message());
  ReportFiles files;
  std::string body;
  for (const auto& [name, image] : charts) {
    std::string png = image.png();
    fs::path path = out / (name + ".png");
    write_file(path, png);
    files.pngs.push_back(path.string());
    body += fmt::format("<img alt=\"{}\" src=\"data:image/png;base64,{}\">\n", name, base64(png));
  }

  int64_t last_step = 0;
  double last_loss = NAN, best_valid = NAN;
  for (const auto& [step, loss] : curve(rows, "loss")) last_step = int64_t(step), last_loss = loss;
  for (const auto& [step, loss] : curve(rows, "valid_loss"))
    best_valid = std::isnan(best_valid) ? loss : std::min(best_valid, loss);
  std::string recipe = read_text(run / "recipe.toml");
  std::string html = fmt::format(R"(<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>sigma report: {0}</title>
<style>body {{ font-family: sans-serif; margin: 2em; color: #222; }}
img {{ display: block; margin: 1em 0; max-width: 100%; }}
td, th {{ padding: 2px 10px; text-align: left; vertical-align: top; }}
pre {{ background: #f4f4f4; padding: 1em; }}</style></head><body>
<h1>sigma report: {0}</h1>
<table>
<tr><th>last logged step</th><td>{1}</td></tr>
<tr><th>last loss</th><td>{2:.4f}</td></tr>
<tr><th>best validation loss</th><td>{3:.4f}</td></tr>
<tr><th>guard: skipped steps, rollbacks</th><td>{4}, {5}</td></tr>
<tr><th>warnings</th><td>{6}</td></tr>
<tr><th>checkpoints written</th><td>{7}</td></tr>
</table>
<h2>Curves</h2>
{8}<h2>Events</h2>
{9}<details><summary>recipe.toml</summary><pre>{10}</pre></details>
</body></html>
)",
                                 html_escape(fs::absolute(run).lexically_normal().string()),
                                 last_step, last_loss, best_valid, skips, rollbacks, warnings,
                                 checkpoints, body, events_table(rows), html_escape(recipe));
  files.html = (out / "report.html").string();
  write_file(files.html, html);
  return files;
}

}  // namespace sigma
