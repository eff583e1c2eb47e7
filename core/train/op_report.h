// OpReport: where the profiled steps' time went (sigma train --profile-ops), as lines of the
// run log: the time of each op summed by name, then the costliest op and shape pairs, beside
// the steps' wall time. Communication, copies and memsets are not ops and are not shown.
#pragma once

#include "core/train/run_log.h"

#include <cstdint>

namespace sigma {

class OpReport {
 public:
  // One profiled step took `seconds` (kernels/op_profile.h recorded its ops).
  void add_step(double seconds) {
    steps_ += 1;
    seconds_ += seconds;
  }
  // Takes the op profile and writes the tables.
  void write(RunLog& log) const;

 private:
  int64_t steps_ = 0;
  double seconds_ = 0;
};

}  // namespace sigma
