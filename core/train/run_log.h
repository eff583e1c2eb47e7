// RunLog: what a run tells its user. Plain lines go to the console and train.log; step
// metrics go to metrics.jsonl (one JSON object per logged step, plus one per event: a row
// with an "event" key) and their numbers to TensorBoard event files (tensorboard.h; the
// tag is the metric's name with '/' for '.', e.g. moe/l1/max_dev_pct). On a terminal the step line
// is a live progress line redrawn in place; elsewhere (CI, files) every step line is kept.
#pragma once

#include "core/train/tensorboard.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>

namespace sigma {

class RunLog {
 public:
  // Opens (appends to) train.log and metrics.jsonl in out_dir. When resuming from
  // `resume_step`, metrics rows after that step (logged before a crash) are dropped first,
  // so the file reads as one uninterrupted run (TensorBoard is told likewise). `speaks` false
  // makes a silent log (the ranks other than 0 of a multi-rank run): it opens nothing and
  // prints nothing.
  RunLog(const std::string& out_dir, int64_t resume_step, bool speaks = true);
  ~RunLog();

  void line(const std::string& text);      // a permanent line
  void progress(const std::string& text);  // the live step line
  void metrics(const nlohmann::json& row);

 private:
  void end_progress();

  FILE* log_ = nullptr;
  FILE* metrics_ = nullptr;
  std::optional<TensorBoardWriter> tensorboard_;
  bool tty_ = false;
  bool progress_open_ = false;
};

}  // namespace sigma
