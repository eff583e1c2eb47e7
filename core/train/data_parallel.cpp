// ZeRO-1 data parallelism (data_parallel.h): bucketed reduce-scatter overlapping backward,
// AdamW on this rank's shards, all-gather of the updated weights.
#include "core/train/data_parallel.h"

#include "core/optim/adamw.h"
#include "kernels/device.h"
#include "kernels/ops.h"

#include <fmt/format.h>

#include <cmath>

namespace sigma {
namespace {

int64_t element_offset(const Tensor& t, const Tensor& base) {
  return (static_cast<const char*>(t.data) - static_cast<const char*>(base.data)) /
         int64_t(dtype_size(t.dtype));
}

// Every parameter as a span of the arenas, in arena (= registration) order.
std::vector<ParamSpan> param_spans(const ParameterSet& params, const Transformer& model,
                                   bool expert_parallel) {
  Tensor values = params.values().whole(DType::kF32), grads = params.grads().whole(DType::kF32);
  Tensor weights = params.whole_weights();
  std::vector<ParamSpan> spans;
  const std::vector<ParamInfo>& list = params.list();
  for (size_t i = 0; i < list.size(); ++i) {
    const ParamInfo& p = list[i];
    ParamSpan span;
    span.index = i;
    span.offset = element_offset(p.param.value, values);
    SIGMA_CHECK(element_offset(p.param.grad, grads) == span.offset &&
                    element_offset(p.param.weight, weights) == span.offset,
                "{}: value, weight and gradient at different offsets", p.name);
    span.numel = p.shape.numel();
    span.row_numel = span.numel / p.shape[0];
    span.part = model.backward_part(p.name);
    SIGMA_CHECK(!p.split() || expert_parallel, "{} is split without expert parallelism", p.name);
    span.group = p.split() ? ReduceGroup::kExpertData : ReduceGroup::kWorld;
    SIGMA_CHECK(spans.empty() || span.offset >= spans.back().offset + spans.back().numel,
                "{}: parameters out of arena order", p.name);
    spans.push_back(span);
  }
  return spans;
}

}  // namespace

void check_batch_split(const Recipe& recipe, int64_t dp, int64_t ep) {
  if (dp == 1) return;
  const TrainConfig& t = recipe.train;
  int64_t micro_tokens = t.micro_batch * recipe.data.seq_len;
  auto check = [&](const char* key, int64_t tokens) {
    if (tokens % (micro_tokens * dp) != 0)
      throw EveryRankError(fmt::format(
          "{}: train.{} = {} is {} micro-batches of {} tokens, not a multiple of the {} "
          "data-parallel ranks; allowed: a multiple of {} tokens",
          recipe.source_path, key, tokens, tokens / micro_tokens, micro_tokens, dp,
          micro_tokens * dp));
  };
  check("global_batch_tokens", t.global_batch_tokens);
  if (t.batch_ramp_start_tokens > 0) check("batch_ramp_start_tokens", t.batch_ramp_start_tokens);
  if (ep == 1) return;
  if (t.batch_ramp_start_tokens > 0)
    throw EveryRankError(fmt::format(
        "{}: train.batch_ramp_start_tokens = {}: a batch ramp with parallelism.ep = {} would give "
        "ranks unequal micro-batch counts, which expert-parallel all-to-alls cannot pair up; "
        "allowed with ep > 1: 0 (no ramp)",
        recipe.source_path, t.batch_ramp_start_tokens, ep));
  if (recipe.eval.interval > 0 && recipe.eval.batches % dp != 0)
    throw EveryRankError(fmt::format(
        "{}: eval.batches = {} does not split over {} ranks, which expert parallelism needs; "
        "allowed: a multiple of {}",
        recipe.source_path, recipe.eval.batches, dp, dp));
}

DataParallel::DataParallel(ProcessGroup& world, ProcessGroup* expert_data, ParameterSet& params,
                           Transformer& model, const OptimizerConfig& optimizer, double bucket_mb,
                           bool overlap)
    : world_(world),
      expert_data_(expert_data),
      params_(params),
      optimizer_(optimizer),
      overlap_(overlap),
      shards_(params.device()) {
  GroupPlace world_place{world.size(), world.rank()};
  GroupPlace expert_place =
      expert_data ? GroupPlace{expert_data->size(), expert_data->rank()} : world_place;
  int64_t bucket_numel = std::max<int64_t>(1, int64_t(bucket_mb * (1 << 20) / sizeof(float)));
  plan_ = plan_zero(param_spans(params, model, expert_data != nullptr), bucket_numel, world_place,
                    expert_place);
  int64_t n = std::max<int64_t>(1, plan_.shard_numel);
  for (int pass = 0; pass < 2; ++pass) {
    reduced_ = shards_.take({n}, DType::kF32, "gradient shard");
    m_ = shards_.take({n}, DType::kF32, "optimizer state");
    v_ = shards_.take({n}, DType::kF32, "optimizer state");
    if (pass == 0) shards_.allocate();
  }
  model.on_grads_ready([this](int64_t part) {
    if (armed_ && overlap_) start_ready(part);
  });
}

DataParallel::~DataParallel() = default;

ProcessGroup& DataParallel::group_of(const Bucket& bucket) const {
  return bucket.group == ReduceGroup::kWorld ? world_ : *expert_data_;
}

Tensor DataParallel::elements(Tensor whole, int64_t begin, int64_t end) {
  return whole.slice_rows(begin, end);
}

std::pair<int64_t, int64_t> DataParallel::my_micro_batches(int64_t micro_batches) const {
  int64_t r = world_.rank(), n = world_.size();
  return {micro_batches * r / n, micro_batches * (r + 1) / n};
}

void DataParallel::arm_last_backward() {
  SIGMA_CHECK(pending_.empty() && next_bucket_ == 0, "{} buckets still pending", pending_.size());
  armed_ = true;
}

void DataParallel::start_ready(int64_t finished_part) {
  // Parts finish from the last layer down: every bucket needing only those is complete.
  while (next_bucket_ < plan_.buckets.size() &&
         plan_.buckets[next_bucket_].ready_part >= finished_part)
    start(next_bucket_++);
}

void DataParallel::start(size_t index) {
  const Bucket& bucket = plan_.buckets[index];
  int r = rank_in(bucket);
  int64_t own = bucket.shard_end(r) - bucket.shard_begin(r);
  Tensor grads = params_.grads().whole(DType::kF32);
  pending_.push_back(group_of(bucket).reduce_scatter_async(
      elements(reduced_, bucket.shard_offset, bucket.shard_offset + own),
      elements(grads, bucket.begin, bucket.end), bucket.counts()));
}

double DataParallel::finish_gradients() {
  // On a GPU, from where backward's kernels end to where the reductions do: what backward did
  // not hide (the host reaches this point long before the GPU does).
  const device::TimePoint computed = device::time_now(params_.device());
  while (next_bucket_ < plan_.buckets.size()) start(next_bucket_++);
  for (std::unique_ptr<Work>& work : pending_) work->wait();
  last_wait_ms_ = device::elapsed_ms(computed, device::time_now(params_.device()));
  if (gather_timed_) {  // long finished by now: reading it here never stalls the GPU
    last_gather_ms_ = device::elapsed_ms(gather_begin_, gather_end_);
    gather_timed_ = false;
  }
  pending_.clear();
  next_bucket_ = 0;
  armed_ = false;
  // Shards partition every gradient once (experts: within their group, whose members hold
  // different experts from the other groups'), so the world sum is the whole norm squared.
  double norm_sq = ops::sum_squares(elements(reduced_, 0, plan_.shard_numel));
  world_.all_reduce_host(std::span<double>(&norm_sq, 1), ReduceOp::kSum);
  return std::sqrt(norm_sq);
}

void DataParallel::step(double lr, double grad_scale, int64_t step) {
  Tensor values = params_.values().whole(DType::kF32);
  for_each_owned([&](const ParamInfo& info, const ParamSpan& span, RowRange rows, int64_t at) {
    int64_t lo = span.offset + rows.first * span.row_numel, n = rows.rows() * span.row_numel;
    // Elementwise, so a shard's update equals those rows of the whole tensor's.
    ops::adamw_update(elements(values, lo, lo + n), elements(reduced_, at, at + n),
                      elements(m_, at, at + n), elements(v_, at, at + n),
                      adamw_step(optimizer_, info, lr, grad_scale, step));
  });
  gather_weights();
}

void DataParallel::gather_weights() {
  // This rank's rows in the compute dtype, then every rank's. On a GPU that is the bf16 copy:
  // half the bytes of the fp32 values (9.1 -> 4.6 GB a step for sigma-1.5b), whose rows owned
  // by other ranks are then stale and never read (checkpoints write a rank's own rows).
  Tensor weights = params_.whole_weights();
  if (params_.separate_weights()) {
    Tensor values = params_.values().whole(DType::kF32);
    for (const Bucket& bucket : plan_.buckets) {
      int64_t begin = bucket.shard_begin(rank_in(bucket)), end = bucket.shard_end(rank_in(bucket));
      if (end > begin) ops::convert(elements(weights, begin, end), elements(values, begin, end));
    }
  }
  if (gather_timed_) device::elapsed_ms(gather_begin_, gather_end_);  // frees the events
  gather_begin_ = device::time_now(params_.device());
  for (const Bucket& bucket : plan_.buckets)
    group_of(bucket).all_gather(elements(weights, bucket.begin, bucket.end), bucket.counts());
  gather_end_ = device::time_now(params_.device());
  gather_timed_ = true;
}

void DataParallel::sum(std::vector<std::vector<int64_t>>& lists) {
  std::vector<int64_t> flat;
  for (const std::vector<int64_t>& list : lists) flat.insert(flat.end(), list.begin(), list.end());
  sum(std::span<int64_t>(flat));
  auto at = flat.begin();
  for (std::vector<int64_t>& list : lists) {
    std::copy(at, at + std::ptrdiff_t(list.size()), list.begin());
    at += std::ptrdiff_t(list.size());
  }
}

void DataParallel::sum_moe_stats(const std::vector<MoeLayer*>& layers) {
  std::vector<std::vector<int64_t>> counts;
  std::vector<double> sums;
  for (MoeLayer* layer : layers) {
    const MoeStepStats& s = layer->step_stats();
    counts.push_back(s.counts);
    counts.push_back({s.forwards});
    sums.insert(sums.end(), {s.lbl_sum, s.entropy_sum, s.aux_sum});
  }
  sum(counts);
  sum(std::span<double>(sums));
  for (size_t i = 0; i < layers.size(); ++i) {
    MoeStepStats s;
    s.counts = counts[2 * i];
    s.forwards = counts[2 * i + 1][0];
    s.lbl_sum = sums[3 * i];
    s.entropy_sum = sums[3 * i + 1];
    s.aux_sum = sums[3 * i + 2];
    layers[i]->set_step_stats(std::move(s));
  }
}

std::vector<CheckpointTensor> DataParallel::checkpoint_tensors(
    const std::vector<std::pair<std::string, Tensor>>& state) const {
  std::vector<CheckpointTensor> tensors;
  for (const auto& [name, tensor] : state)
    tensors.push_back({"model/" + name, tensor, tensor.shape, 0});
  for_each_owned([&](const ParamInfo& info, const ParamSpan& span, RowRange rows, int64_t at) {
    Shape local = info.shape;
    local.dims[0] = rows.rows();
    int64_t n = rows.rows() * span.row_numel;
    int64_t row_offset = info.row_offset + rows.first;
    tensors.push_back({"model/" + info.name, info.param.value.slice_rows(rows.first, rows.last),
                       info.global_shape, row_offset});
    tensors.push_back({"optim/m/" + info.name, elements(m_, at, at + n).view(local),
                       info.global_shape, row_offset});
    tensors.push_back({"optim/v/" + info.name, elements(v_, at, at + n).view(local),
                       info.global_shape, row_offset});
  });
  return tensors;
}

}  // namespace sigma
