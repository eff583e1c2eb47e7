// The ZeRO-1 plan: which gradient buckets the data-parallel ranks reduce, in what order,
// and which rows of each bucket each rank owns (its shard of the optimizer state and of the
// fp32 master weights). Pure bookkeeping over the parameter arenas, so it is tested
// without ranks (test/test_dist.cpp).
//
// Parameters, their gradients and values lie in arenas of identical layout (models/
// parameters.h); a bucket is a run of parameters adjacent there, so one collective moves it
// in place. Buckets are cut in the order backward finishes gradients (LM head first,
// embedding last; Transformer::on_grads_ready), at most bucket_numel elements each unless
// one parameter is larger, and never mix the two reduction groups: dense parameters are
// reduced over every rank, experts split by expert parallelism over the ranks holding the
// same experts (core/dist/world.h).
//
// A bucket's shards are cut at row starts (dim 0 of each parameter), as evenly as whole
// rows allow, so a rank's shard of a tensor is a row range: exactly what a checkpoint
// index records (core/checkpoint/index.h). Megatron's distributed optimizer cuts at any
// element instead; rows cost some balance on small tensors (a shard may even be empty) and
// spare the checkpoint a second slicing scheme.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace sigma {

enum class ReduceGroup { kWorld, kExpertData };

// One parameter inside the flat arenas (element offsets).
struct ParamSpan {
  size_t index = 0;    // in ParameterSet::list()
  int64_t offset = 0;  // first element in the arenas
  int64_t numel = 0;
  int64_t row_numel = 1;  // elements per row (dim 0)
  int64_t part = 0;       // Transformer::backward_part
  ReduceGroup group = ReduceGroup::kWorld;
};

struct Bucket {
  ReduceGroup group = ReduceGroup::kWorld;
  std::vector<ParamSpan> params;  // in arena order
  int64_t begin = 0, end = 0;     // the elements it spans, alignment gaps included
  int64_t ready_part = 0;         // complete once backward has finished this part
  std::vector<int64_t> bounds;    // group size + 1 offsets: rank r owns [bounds[r], bounds[r+1])
  int64_t shard_offset = 0;       // where this rank's shard lies in the sharded buffers

  int64_t shard_begin(int rank) const { return bounds[size_t(rank)]; }
  int64_t shard_end(int rank) const { return bounds[size_t(rank) + 1]; }
  std::vector<int64_t> counts() const;  // elements per rank
};

struct ZeroPlan {
  std::vector<Bucket> buckets;  // in the order backward completes them
  int64_t shard_numel = 0;      // this rank's elements over every bucket
};

// The size and this rank's place in each reduction group.
struct GroupPlace {
  int size = 1;
  int rank = 0;
};

// `params` in arena order. `world` places this rank among all, `expert_data` among the
// ranks holding its experts.
ZeroPlan plan_zero(const std::vector<ParamSpan>& params, int64_t bucket_numel, GroupPlace world,
                   GroupPlace expert_data);

// `parts` + 1 offsets splitting [begin, end) of `params` (which lie there in order) at row
// starts, each as near an even split as rows allow, non-decreasing.
std::vector<int64_t> row_aligned_bounds(const std::vector<ParamSpan>& params, int64_t begin,
                                        int64_t end, int parts);

// The rows [first, last) of `param` inside the element range [begin, end), whose ends lie
// at row starts or outside the parameter.
struct RowRange {
  int64_t first = 0, last = 0;
  int64_t rows() const { return last - first; }
};
RowRange rows_within(const ParamSpan& param, int64_t begin, int64_t end);

}  // namespace sigma
