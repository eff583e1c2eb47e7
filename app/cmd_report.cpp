// sigma report RUN_DIR [--out DIR]: a run's curves and expert-load heatmap as one HTML file
// with the images inside, plus the PNGs (core/report/report.h).
#include "app/commands.h"
#include "core/report/report.h"

#include <fmt/format.h>

#include <filesystem>
#include <memory>

namespace sigma::app {

void add_report_command(CLI::App& app) {
  auto run_dir = std::make_shared<std::string>();
  auto out_dir = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand(
      "report", "Render a run's curves and expert load to one self-contained HTML file and PNGs");
  cmd->add_option("run_dir", *run_dir, "Run directory (holds metrics.jsonl)")->required();
  cmd->add_option("--out", *out_dir,
                  "Where to write report.html and the PNGs (default RUN_DIR/report)");
  cmd->callback([run_dir, out_dir] {
    std::string out =
        out_dir->empty() ? (std::filesystem::path(*run_dir) / "report").string() : *out_dir;
    ReportFiles files = write_report(*run_dir, out);
    fmt::print("report     {}\n", files.html);
    fmt::print("images     {} PNG files in {}\n", files.pngs.size(), out);
  });
}

}  // namespace sigma::app
