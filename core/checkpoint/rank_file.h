// One rank's file of a checkpoint, rank_NNNNN.h5:
//
//   /                 attributes rank, world_size, step (int64)
//   /model/<name>     f32 rows of a tensor as this rank holds them (its local shape), with
//   /optim/m/<name>   attributes global_shape (int64[]) and row_offset (int64);
//   /optim/v/<name>   tensors of which this rank holds no rows are left out
//   /state            one int64 attribute per CheckpointState.ints entry, one double per floats
//
// write_rank_file (declared in checkpoint.h) writes it; loading reads rows through the index.
#pragma once

#include "core/checkpoint/checkpoint.h"
#include "core/checkpoint/hdf5_file.h"

namespace sigma {

CheckpointState read_state(const h5::Object& rank_file);

}  // namespace sigma
