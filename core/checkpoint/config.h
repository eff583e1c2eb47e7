// CheckpointConfig: the [checkpoint] recipe section.
// Recipe keys (docs, ranges) and cross-field checks: core/checkpoint/config.cpp.
#pragma once

#include <cstdint>
#include <string>

namespace sigma {

struct CheckpointConfig {
  int64_t interval = 0;   // steps between checkpoints; 0 saves only at the end
  int64_t keep = 3;       // newest committed checkpoints kept; older ones are deleted
  bool save_final = true; // save when the last step completes
  bool async = true;      // write in the background from a host copy (async_writer.h)
  std::string dir;        // default: <run.out_dir>/checkpoints

  bool operator==(const CheckpointConfig&) const = default;
};

}  // namespace sigma
