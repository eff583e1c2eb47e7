// Guard: the numerical guards of a run (recipe section [guard]).
//
// Before each update the trainer shows the guard the step's loss and gradient norm. The
// update is skipped when either is not finite (SIGMA-FAMILY.md section 3 treats a NaN loss
// as a hardware fault, not a fact about the model) or spikes: more than loss_z (grad_norm_z)
// standard deviations above its moving mean. The mean and variance are exponentially
// weighted over `window` applied steps, a window that costs two numbers per signal and so
// travels in the checkpoint, keeping a resumed run's decisions bit-identical. The spread is
// taken as at least 1% of the mean, so a flat curve does not turn noise into spikes. Skipped
// steps never enter the statistics. After rollback_after skipped steps in a row the trainer
// rolls back (trainer.cpp: the last committed checkpoint, with the data read since skipped,
// as PaLM did for its loss spikes, arXiv 2204.02311 section 5.1). Every event is a train.log line
// and a metrics.jsonl row. Leaves out: hang detection and comparing ranks (they need the multi-rank
// layer).
#pragma once

#include "core/checkpoint/checkpoint.h"
#include "core/train/guard_config.h"
#include "core/train/run_log.h"

#include <cstdint>
#include <string>

namespace sigma {

class Guard {
 public:
  explicit Guard(const GuardConfig& config) : config_(config) {}

  // Whether the update of step `step` (1-based) may be applied; a skip is logged. Test
  // faults (core/fault.h: nan_loss, loss_spike, ...) alter the values seen here.
  bool admit(int64_t step, double loss, double grad_norm, RunLog& log);
  int64_t skipped_in_a_row() const { return skipped_in_a_row_; }
  bool wants_rollback() const {
    return config_.rollback_after > 0 && skipped_in_a_row_ >= config_.rollback_after;
  }
  // Before the trainer reloads `dir` (at `to_step`): logs the rollback, or throws UserError
  // when max_rollbacks are used up.
  void roll_back(int64_t step, const std::string& dir, int64_t to_step, int64_t skipped_samples,
                 RunLog& log);

  // The moving statistics, as checkpoint state (absent keys restore fresh statistics).
  void save(CheckpointState& state) const;
  void restore(const CheckpointState& state);

 private:
  // An exponentially weighted mean and variance (the incremental form of Finch, 2009).
  struct Moving {
    double mean = 0, variance = 0;
    int64_t count = 0;
    void add(double x, double alpha);
    double z_score(double x) const;
  };

  const GuardConfig& config_;
  Moving loss_, grad_norm_;
  int64_t skipped_in_a_row_ = 0;
  int64_t rollbacks_ = 0;
};

}  // namespace sigma
