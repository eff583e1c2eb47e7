// Cutting buckets and row-aligned shards (zero_plan.h).
#include "core/train/zero_plan.h"

#include "core/error.h"

#include <algorithm>

namespace sigma {

std::vector<int64_t> Bucket::counts() const {
  std::vector<int64_t> counts;
  for (size_t r = 0; r + 1 < bounds.size(); ++r) counts.push_back(bounds[r + 1] - bounds[r]);
  return counts;
}

std::vector<int64_t> row_aligned_bounds(const std::vector<ParamSpan>& params, int64_t begin,
                                        int64_t end, int parts) {
  std::vector<int64_t> bounds{begin};
  for (int i = 1; i < parts; ++i) {
    int64_t target = begin + (end - begin) * i / parts;
    // The row start nearest the target, within the parameter holding it or the next one
    // (a target in an alignment gap moves to the next parameter's start).
    int64_t cut = end;
    for (const ParamSpan& p : params) {
      if (target >= p.offset + p.numel) continue;
      if (target <= p.offset) {
        cut = p.offset;
      } else {
        int64_t rows = p.numel / p.row_numel;
        int64_t row = std::min(rows, (target - p.offset + p.row_numel / 2) / p.row_numel);
        cut = p.offset + row * p.row_numel;
        if (row == rows) {  // the end of this parameter: where the next one starts
          auto next = &p + 1;
          cut = next != params.data() + params.size() ? next->offset : end;
        }
      }
      break;
    }
    bounds.push_back(std::max(bounds.back(), cut));
  }
  bounds.push_back(end);
  return bounds;
}

RowRange rows_within(const ParamSpan& param, int64_t begin, int64_t end) {
  int64_t lo = std::clamp(begin, param.offset, param.offset + param.numel);
  int64_t hi = std::clamp(end, param.offset, param.offset + param.numel);
  SIGMA_CHECK(
      (lo - param.offset) % param.row_numel == 0 && (hi - param.offset) % param.row_numel == 0,
      "[{}, {}) cuts parameter {} inside a row", begin, end, param.index);
  return {(lo - param.offset) / param.row_numel, (hi - param.offset) / param.row_numel};
}

ZeroPlan plan_zero(const std::vector<ParamSpan>& params, int64_t bucket_numel, GroupPlace world,
                   GroupPlace expert_data) {
  ZeroPlan plan;
  // Backward order: the reverse of the arena's, where the LM head comes last.
  for (auto it = params.rbegin(); it != params.rend(); ++it) {
    Bucket* open = plan.buckets.empty() ? nullptr : &plan.buckets.back();
    int64_t filled = open ? open->params.back().offset + open->params.back().numel - it->offset : 0;
    if (!open || open->group != it->group || filled > bucket_numel) {
      plan.buckets.push_back({});
      open = &plan.buckets.back();
      open->group = it->group;
    }
    open->params.insert(open->params.begin(), *it);
  }
  for (Bucket& bucket : plan.buckets) {
    const ParamSpan& first = bucket.params.front();
    const ParamSpan& last = bucket.params.back();
    bucket.begin = first.offset;
    bucket.end = last.offset + last.numel;
    bucket.ready_part = first.part;
    for (const ParamSpan& p : bucket.params) {
      SIGMA_CHECK(p.row_numel > 0 && p.numel % p.row_numel == 0, "parameter {} rows", p.index);
      bucket.ready_part = std::min(bucket.ready_part, p.part);
    }
    GroupPlace place = bucket.group == ReduceGroup::kWorld ? world : expert_data;
    bucket.bounds = row_aligned_bounds(bucket.params, bucket.begin, bucket.end, place.size);
    bucket.shard_offset = plan.shard_numel;
    plan.shard_numel += bucket.shard_end(place.rank) - bucket.shard_begin(place.rank);
  }
  // Backward must finish buckets in this order for the overlap to start them in it.
  for (size_t i = 1; i < plan.buckets.size(); ++i)
    SIGMA_CHECK(plan.buckets[i].ready_part <= plan.buckets[i - 1].ready_part,
                "bucket {} is ready after bucket {}", i - 1, i);
  return plan;
}

}  // namespace sigma
