// DataParallel: one training step spread over the data-parallel ranks, ZeRO-1 style
// (Rajbhandari et al. 2020, stage 1; Megatron-Core's distributed optimizer).
//
//   data      each rank computes a consecutive block of the step's micro-batches, in rank
//             order, so together they read exactly the samples one process would
//   backward  as backward finishes each gradient bucket (zero_plan.h) of the step's last
//             micro-batch, its reduce-scatter starts on the group's side channel (MPI: the
//             communication thread; NCCL: a side stream) while backward goes on
//   step      each rank runs AdamW on its shard only: fp32 moments and the fp32 master
//             rows it owns; then the updated weights are all-gathered in place
//   norm      the global gradient norm sums each rank's shard, so clipping matches one
//             process's up to the order of the sums
// Dense parameters reduce over every rank, experts split by expert parallelism over the
// ranks holding the same experts. A checkpoint holds each rank's shard rows of every
// weight and moment (core/checkpoint/multi_rank.h), so any layout can load it.
//
// Memory per rank: weights and gradients whole (the model computes with them), optimizer
// moments and the reduced gradient shard at 1/dp (of the reduction group). On CUDA the
// fp32 master copy is still allocated whole by ParameterSet, of which each rank updates
// its rows only (left for issue 9: allocate the master shard alone).
// Leaves out: overlapping the all-gather with the next forward, ZeRO-2/3, and reduce
// order control: the sums over ranks are MPI's or NCCL's (deterministic for a fixed
// layout, not equal to one process's order).
#pragma once

#include "core/checkpoint/checkpoint.h"
#include "core/dist/process_group.h"
#include "core/optim/config.h"
#include "core/recipe/recipe.h"
#include "core/tensor/arena.h"
#include "core/train/zero_plan.h"
#include "kernels/device.h"
#include "models/transformer.h"

#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace sigma {

// A step's micro-batches must split evenly over dp ranks (the global batch, and the start of
// a batch ramp, in multiples of dp micro-batches); with ep > 1 every rank must also run the
// same number of passes (each MoE layer's all-to-all pairs them up), which rules out a ramp
// and needs eval.batches in multiples of dp. Throws EveryRankError naming the key.
void check_batch_split(const Recipe& recipe, int64_t dp, int64_t ep);

class DataParallel {
 public:
  // `expert_data`: the ranks holding this rank's experts (null without expert parallelism).
  // `overlap`: start bucket reductions during backward (else all after it, to measure).
  DataParallel(ProcessGroup& world, ProcessGroup* expert_data, ParameterSet& params,
               Transformer& model, const OptimizerConfig& optimizer, double bucket_mb,
               bool overlap);
  ~DataParallel();
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  // This rank's micro-batches [first, last) of a step of `micro_batches`.
  std::pair<int64_t, int64_t> my_micro_batches(int64_t micro_batches) const;

  // The next backward is this step's last on this rank: its finished buckets start reducing.
  void arm_last_backward();
  // Waits for every bucket (starting those not started yet); returns the global gradient
  // norm of the step, before clipping.
  double finish_gradients();
  // AdamW on this rank's shards, then the updated weights go to every rank.
  void step(double lr, double grad_scale, int64_t step);
  // The compute weights of this rank's rows from its values, then every rank's rows to every
  // rank (after each update, and after loading a checkpoint's shards: it stands in for
  // ParameterSet::refresh_weights).
  void gather_weights();

  // This rank's rows of every weight and moment, and the `state` tensors whole (every rank
  // keeps them alike), for checkpoints to write and read.
  std::vector<CheckpointTensor> checkpoint_tensors(
      const std::vector<std::pair<std::string, Tensor>>& state) const;

  // Sums over every rank, in place.
  void sum(std::span<double> values) { world_.all_reduce_host(values, ReduceOp::kSum); }
  void sum(std::span<int64_t> values) { world_.all_reduce_host(values, ReduceOp::kSum); }
  void sum(std::vector<std::vector<int64_t>>& lists);  // in one collective
  // Each layer's step statistics (token counts, balancing-loss sums, forwards), summed.
  void sum_moe_stats(const std::vector<MoeLayer*>& layers);

  ProcessGroup& world() { return world_; }
  const ZeroPlan& plan() const { return plan_; }
  // In milliseconds of the device's time: the last finish_gradients()'s wait for the
  // reductions backward did not hide, and the all-gather (not overlapped) of the
  // gather_weights() before it, read then so that timing it never stalls the GPU (the
  // previous step's, or 0).
  double last_wait_ms() const { return last_wait_ms_; }
  double last_gather_ms() const { return last_gather_ms_; }

 private:
  ProcessGroup& group_of(const Bucket& bucket) const;
  int rank_in(const Bucket& bucket) const { return group_of(bucket).rank(); }
  // Calls f(info, span, rows, at) for every parameter rows this rank owns: rows [first, last)
  // of the parameter of `span`, whose first element sits at `at` in the shard buffers.
  template <typename F>
  void for_each_owned(F f) const {
    const std::vector<ParamInfo>& list = params_.list();
    for (const Bucket& bucket : plan_.buckets) {
      int r = rank_in(bucket);
      int64_t begin = bucket.shard_begin(r), end = bucket.shard_end(r);
      for (const ParamSpan& span : bucket.params) {
        RowRange rows = rows_within(span, begin, end);
        if (rows.rows() == 0) continue;
        f(list[span.index], span, rows,
          bucket.shard_offset + span.offset + rows.first * span.row_numel - begin);
      }
    }
  }
  void start_ready(int64_t finished_part);
  void start(size_t bucket);
  // A flat [begin, end) element range of an arena-layout tensor.
  static Tensor elements(Tensor whole, int64_t begin, int64_t end);

  ProcessGroup& world_;
  ProcessGroup* expert_data_;
  ParameterSet& params_;
  const OptimizerConfig& optimizer_;
  bool overlap_;
  ZeroPlan plan_;
  Arena shards_;                                // on the parameters' device
  Tensor reduced_, m_, v_;                      // [plan_.shard_numel] each
  std::vector<std::unique_ptr<Work>> pending_;  // one per started bucket
  size_t next_bucket_ = 0;                      // the next bucket to start this step
  bool armed_ = false;
  double last_wait_ms_ = 0;
  double last_gather_ms_ = 0;
  device::TimePoint gather_begin_, gather_end_;
  bool gather_timed_ = false;  // the two points above wait to be read
};

}  // namespace sigma
