#include "core/train/run_log.h"

#include "core/error.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <vector>

namespace sigma {

namespace fs = std::filesystem;

namespace {

void drop_metrics_after(const fs::path& path, int64_t step) {
  std::ifstream in(path);
  if (!in) return;
  std::vector<std::string> kept;
  for (std::string row; std::getline(in, row);) {
    auto json = nlohmann::json::parse(row, nullptr, false);
    if (!json.is_discarded() && json.value("step", int64_t(0)) <= step) kept.push_back(row);
  }
  fs::path tmp = path;
  tmp += ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    for (const std::string& row : kept) out << row << '\n';
  }
  fs::rename(tmp, path);
}

FILE* open_append(const fs::path& path) {
  FILE* f = std::fopen(path.c_str(), "a");
  if (!f) fail("cannot write {}", path.string());
  return f;
}

}  // namespace

RunLog::RunLog(const std::string& out_dir, int64_t resume_step, bool speaks) {
  if (!speaks) return;
  tensorboard_.emplace(out_dir, resume_step + 1);
  fs::path metrics_path = fs::path(out_dir) / "metrics.jsonl";
  if (resume_step >= 0) drop_metrics_after(metrics_path, resume_step);
  log_ = open_append(fs::path(out_dir) / "train.log");
  metrics_ = open_append(metrics_path);
  tty_ = isatty(fileno(stdout));
}

RunLog::~RunLog() {
  end_progress();
  if (log_) std::fclose(log_);
  if (metrics_) std::fclose(metrics_);
}

void RunLog::end_progress() {
  if (progress_open_) std::fputc('\n', stdout);
  progress_open_ = false;
}

void RunLog::line(const std::string& text) {
  if (!log_) return;
  end_progress();
  std::fprintf(stdout, "%s\n", text.c_str());
  std::fflush(stdout);
  std::fprintf(log_, "%s\n", text.c_str());
  std::fflush(log_);
}

void RunLog::progress(const std::string& text) {
  if (!log_) return;
  std::fprintf(log_, "%s\n", text.c_str());
  std::fflush(log_);
  if (!tty_) {
    std::fprintf(stdout, "%s\n", text.c_str());
  } else {
    std::fprintf(stdout, "\r\033[K%s", text.c_str());  // redraw the one live line
    progress_open_ = true;
  }
  std::fflush(stdout);
}

void RunLog::metrics(const nlohmann::json& row) {
  if (!metrics_) return;
  std::string text = row.dump();
  std::fprintf(metrics_, "%s\n", text.c_str());
  std::fflush(metrics_);
  if (row.contains("event")) return;
  std::vector<std::pair<std::string, double>> scalars;
  for (const auto& [key, value] : row.items()) {
    if (key == "step" || !value.is_number()) continue;
    std::string tag = key;
    std::replace(tag.begin(), tag.end(), '.', '/');
    scalars.emplace_back(tag, value.get<double>());
  }
  tensorboard_->scalars(row.value("step", int64_t(0)), scalars);
}

}  // namespace sigma
