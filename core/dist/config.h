// ParallelismConfig: the [parallelism] recipe section: how ranks split the work, and how long
// a rank waits for the others before it gives up.
// Recipe keys (docs, ranges) and cross-field checks: core/dist/config.cpp; checked against the
// launched world size when training starts (core/dist/world.cpp).
#pragma once

#include <cstdint>

namespace sigma {

struct ParallelismConfig {
  int64_t dp = 0;         // data-parallel ranks; 0 means every launched rank
  int64_t ep = 1;         // expert-parallel ranks inside each data-parallel group; divides dp
  double bucket_mb = 25;  // gradient bucket size for the overlapped reduce-scatter
  bool overlap_grad_reduce = true;    // reduce buckets during backward (false: after it)
  double collective_timeout_s = 600;  // a collective waiting longer than this ends the rank
  double progress_timeout_s = 1800;   // no progress for this long ends the rank (a hang)

  bool operator==(const ParallelismConfig&) const = default;
};

}  // namespace sigma
