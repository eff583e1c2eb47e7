#include "core/train/op_report.h"

#include "kernels/op_profile.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <string>
#include <vector>

namespace sigma {

void OpReport::write(RunLog& log) const {
  std::vector<op_profile::Row> rows = op_profile::take();
  if (steps_ == 0 || rows.empty()) {
    log.line("op profile: no step after the first to profile");
    return;
  }
  double steps = double(steps_), step_ms = 1e3 * seconds_ / steps, ops_ms = 0;
  std::map<std::string, op_profile::Row> by_op;
  for (const op_profile::Row& row : rows) {
    ops_ms += row.ms / steps;
    op_profile::Row& sum = by_op[row.op];
    sum.op = row.op;
    sum.calls += row.calls;
    sum.ms += row.ms;
  }
  std::vector<op_profile::Row> ops;
  for (const auto& [name, row] : by_op) ops.push_back(row);
  std::sort(ops.begin(), ops.end(), [](const auto& a, const auto& b) { return a.ms > b.ms; });

  // The ops' event times can add up to more than the host's step time (seen: 3% for a dense
  // model, 19% for an MoE), so shares are of their sum, and the step time is shown beside it.
  log.line(fmt::format("op profile: {} steps after the first, {:.1f} ms a step (host clock); "
                       "the ops' event times add up to {:.1f} ms a step; shares are of that sum",
                       steps_, step_ms, ops_ms));
  auto line = [&](const op_profile::Row& row, const std::string& what) {
    double ms = row.ms / steps;
    log.line(fmt::format("  {:9.2f} {:6.1f}% {:10.1f}  {}", ms, 100 * ms / ops_ms,
                         double(row.calls) / steps, what));
  };
  log.line(fmt::format("  {:>9} {:>7} {:>10}  {}", "ms/step", "share", "calls/step", "op"));
  for (const op_profile::Row& row : ops) line(row, row.op);
  constexpr size_t kShapes = 25;
  log.line(fmt::format("  the {} costliest ops by shape (their first two tensors):",
                       std::min(kShapes, rows.size())));
  for (size_t i = 0; i < rows.size() && i < kShapes; ++i)
    line(rows[i], rows[i].op + " " + rows[i].shapes);
}

}  // namespace sigma
