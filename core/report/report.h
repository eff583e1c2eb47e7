// `sigma report RUN_DIR`: a run's curves and expert-load heatmap as one self-contained HTML
// file (the PNGs embedded as data URIs, so it opens anywhere, mailed or copied, with no
// server) plus the same PNGs as files.
//
// Read from RUN_DIR/metrics.jsonl (recipe.toml for the summary). Charts, each drawn only when
// its metric is there: loss (and validation loss) with guard events marked, learning rate,
// gradient norm, tokens/s, MFU, per-layer parameter norms over steps and by depth at the
// last logged step (the LTF collapse signal, early_warnings.h), and for MoE models the
// busiest-expert deviation per layer, the balancing loss and the heatmap of tokens per
// expert per layer over the last tenth of the expert-load rows (log.expert_load_interval
// steps each). A step logged again after a
// resume or a rollback replaces what was logged from that step on, as TensorBoard does.
#pragma once

#include <string>
#include <vector>

namespace sigma {

struct ReportFiles {
  std::string html;
  std::vector<std::string> pngs;
};

// Writes OUT_DIR/report.html and OUT_DIR/<chart>.png (OUT_DIR is created). UserError when
// RUN_DIR has no metrics.jsonl.
ReportFiles write_report(const std::string& run_dir, const std::string& out_dir);

}  // namespace sigma
