#include "core/train/trainer.h"

#include "core/checkpoint/async_writer.h"
#include "core/checkpoint/checkpoint.h"
#include "core/checkpoint/verify.h"
#include "core/checkpoint/multi_rank.h"
#include "core/data/loader.h"
#include "core/dist/world.h"
#include "core/optim/adamw.h"
#include "core/optim/lr_schedule.h"
#include "core/train/batch_schedule.h"
#include "core/train/early_warnings.h"
#include "core/train/guard.h"
#include "core/train/op_report.h"
#include "core/train/preemption.h"
#include "core/train/data_parallel.h"
#include "core/train/run_log.h"
#include "kernels/device.h"
#include "kernels/op_profile.h"
#include "kernels/ops.h"
#include "kernels/threads.h"
#include "models/model_plan.h"
#include "models/transformer.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <optional>
#include <thread>

namespace sigma {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// bf16 dense tensor-core rate of the H100/H200 datasheet: the MFU denominator of the
// PyTorch peer (shared/bench/README.md), so the two MFUs compare.
constexpr double kHopperPeakFlops = 989e12;

namespace {

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// The MFU denominator on a CPU: our own SGEMM path on a square problem, the best of several
// short rounds, so that a moment of contention from other processes does not lower it.
double measure_cpu_peak_flops() {
  constexpr int64_t kSize = 512;
  constexpr int kRounds = 8, kRepsPerRound = 4;
  Buffer buffer(3 * kSize * kSize * sizeof(float), Device::kCpu);
  Tensor a = buffer.tensor(0, {kSize, kSize}, DType::kF32);
  Tensor b = buffer.tensor(a.bytes(), {kSize, kSize}, DType::kF32);
  Tensor c = buffer.tensor(2 * a.bytes(), {kSize, kSize}, DType::kF32);
  ops::matmul_forward(c, a, b);  // warm up
  double best = 0;
  for (int round = 0; round < kRounds; ++round) {
    auto start = Clock::now();
    for (int rep = 0; rep < kRepsPerRound; ++rep) ops::matmul_forward(c, a, b);
    best = std::max(best, 2.0 * kSize * kSize * kSize * kRepsPerRound / seconds_since(start));
  }
  return best;
}

std::string format_duration(double seconds) {
  int64_t s = int64_t(seconds);
  if (s >= 3600) return fmt::format("{}h{:02}m", s / 3600, s % 3600 / 60);
  if (s >= 60) return fmt::format("{}m{:02}s", s / 60, s % 60);
  return fmt::format("{}s", s);
}

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
  if (!out) fail("cannot write {}", path.string());
}

// Everything a run holds in memory, built from the recipe in layout passes, on one device.
// With several ranks, DataParallel holds the (sharded) optimizer state instead of AdamW.
struct Engine {
  Engine(const Recipe& recipe, Device device, World& world)
      : recipe(recipe),
        device(device),
        params(device),
        activations(device),
        model(recipe.model, recipe.train.micro_batch, recipe.data.seq_len, recipe.train.recompute,
              world.ep_group.get()),
        inputs_host(2 * size_t(model.tokens_per_pass()) * sizeof(int32_t), Device::kCpu) {
    model.bind_params(params);
    params.allocate();
    model.bind_params(params);
    model.layout_acts(activations);
    activations.allocate();
    model.layout_acts(activations);
    if (world.size() == 1)
      optimizer.emplace(recipe.optimizer, params);
    else
      parallel.emplace(*world.world, world.expert_dp_group.get(), params, model, recipe.optimizer,
                       recipe.parallelism.bucket_mb, recipe.parallelism.overlap_grad_reduce);
  }

  // Where the data loader writes a micro-batch; load_inputs() moves it to the model.
  int32_t* tokens_host() { return static_cast<int32_t*>(inputs_host.data()); }
  int32_t* targets_host() { return tokens_host() + model.tokens_per_pass(); }
  void load_inputs() {
    int64_t n = model.tokens_per_pass();
    device::copy(model.tokens(), inputs_host.tensor(0, {n}, DType::kI32));
    device::copy(model.targets(), inputs_host.tensor(size_t(n) * sizeof(int32_t), {n}, DType::kI32));
  }

  // Every tensor a checkpoint holds, where they live (weights, moments, router state).
  std::vector<CheckpointTensor> device_tensors() {
    if (parallel) return parallel->checkpoint_tensors(model.state_tensors());  // shards
    std::vector<CheckpointTensor> tensors;
    // Not trainable, so not in the optimizer; restored with the weights.
    for (const auto& [name, tensor] : model.state_tensors())
      tensors.push_back({"model/" + name, tensor, tensor.shape, 0});
    const auto& list = params.list();
    for (size_t i = 0; i < list.size(); ++i) {
      const ParamInfo& p = list[i];
      tensors.push_back({"model/" + p.name, p.param.value, p.shape, 0});
      tensors.push_back({"optim/m/" + p.name, optimizer->m(i), p.shape, 0});
      tensors.push_back({"optim/v/" + p.name, optimizer->v(i), p.shape, 0});
    }
    return tensors;
  }

  const Recipe& recipe;
  Device device;
  ParameterSet params;
  Arena activations;
  Transformer model;
  std::optional<AdamW> optimizer;
  std::optional<DataParallel> parallel;
  Buffer inputs_host;
};

struct Progress {
  int64_t step = 0;    // optimizer steps completed
  int64_t tokens = 0;  // training tokens consumed
};

class Trainer {
 public:
  Trainer(const Recipe& recipe, const TrainOptions& options, World& world)
      : recipe_(recipe),
        options_(options),
        world_(world),
        engine_(recipe, recipe.train.device == DeviceKind::kCuda ? Device::kCuda : Device::kCpu,
                world),
        batches_(recipe.train, recipe.data.seq_len),
        train_data_(recipe.data, Split::kTrain, recipe.run.seed),
        plan_(plan_model(recipe.model, recipe.train.micro_batch, recipe.data.seq_len,
                         engine_.device, recipe.train.recompute)) {
    if (recipe.eval.interval > 0 && recipe.data.valid_fraction > 0)
      valid_data_.emplace(recipe.data, Split::kValid, recipe.run.seed);
  }

  void run() {
    fs::create_directories(recipe_.run.out_dir);
    std::vector<nlohmann::json> skipped;  // checkpoints --resume auto found damaged
    std::optional<LoadedCheckpoint> resumed = restore(skipped);
    // --resume auto without a checkpoint restarts from step 0: rows of an earlier attempt
    // that never reached a checkpoint are dropped too.
    int64_t resume_step = resumed ? resumed->step : options_.resume == "auto" ? 0 : -1;
    // Rank 0 speaks for the run; the other ranks' logs stay silent.
    log_.emplace(recipe_.run.out_dir, resume_step, world_.leader());
    for (const nlohmann::json& row : skipped) {
      log_->line(fmt::format("warning: skipped checkpoint {}: {}", std::string(row["checkpoint"]),
                             std::string(row["reason"])));
      log_->metrics(row);
    }
    if (world_.leader())
      write_text(fs::path(recipe_.run.out_dir) / "recipe.toml", recipe_.resolved_toml);
    if (recipe_.checkpoint.async && !writer_.async())
      log_->line("checkpoint.async: writes are synchronous with more than one rank (every rank "
                 "takes part in the commit)");
    announce(resumed);

    int64_t total = batches_.total_steps();
    auto run_start = Clock::now();
    int64_t steps_run = 0;  // updates applied by this process
    while (progress_.step < total) {
      // The first step also plans GEMMs and warms caches: the profile starts after it.
      bool profiled = options_.profile_ops && steps_run > 0;
      if (profiled) op_profile::start();
      auto step_start = Clock::now();
      std::optional<double> loss = train_step();
      double step_seconds = seconds_since(step_start);
      if (profiled) {
        op_profile::stop();
        op_report_.add_step(step_seconds);
      }
      report_save(writer_.poll());
      if (!loss) {  // the guard skipped the update
        if (guard_.wants_rollback()) roll_back();
      } else {
        steps_run += 1;
        if (moe_) warnings_.observe_experts(progress_.step, *log_);
        if (progress_.step % recipe_.log.interval == 0 || progress_.step == total)
          log_step(*loss, step_seconds, seconds_since(run_start) / double(steps_run));
        if (valid_data_ && progress_.step % recipe_.eval.interval == 0) validate();
        bool stop = options_.stop_at_step > 0 && progress_.step >= options_.stop_at_step;
        bool interval = recipe_.checkpoint.interval > 0 &&
                        progress_.step % recipe_.checkpoint.interval == 0;
        bool last = progress_.step == total && recipe_.checkpoint.save_final;
        if (interval || last || stop) save();
        phase(fmt::format("after step {}", progress_.step));
        if (stop) {
          report_save(writer_.wait());
          log_->line(fmt::format("stopped after step {} as asked; resume with --resume auto",
                                 progress_.step));
          return;
        }
      }
      if (int signal = stop_signal()) return preempt(signal);
    }
    report_save(writer_.wait());
    if (options_.profile_ops) op_report_.write(*log_);
    log_->line(fmt::format("done: {} steps, {} tokens in {}", progress_.step, progress_.tokens,
                           format_duration(seconds_since(run_start))));
  }

 private:
  // A damaged checkpoint found by --resume auto goes into `skipped` (as a metrics row) and
  // the one before it is taken; when none is intact the run stops rather than start over.
  // Every rank resumes from the checkpoint rank 0 finds.
  std::optional<LoadedCheckpoint> restore(std::vector<nlohmann::json>& skipped) {
    phase("loading the checkpoint");
    std::string dir = agree_on_checkpoint(*world_.world, [&] {
      if (options_.resume != "auto")
        return options_.resume.empty() ? std::string() : resolve_checkpoint(options_.resume);
      std::string found = find_verified_checkpoint(
          recipe_.checkpoint.dir, [&](const std::string& damaged, const std::string& reason) {
            skipped.push_back({{"step", 0},
                               {"event", "checkpoint.skipped"},
                               {"checkpoint", damaged},
                               {"reason", reason}});
          });
      if (found.empty() && !skipped.empty())
        fail("--resume auto: no intact checkpoint in {}; the newest fails with: {}",
             recipe_.checkpoint.dir, std::string(skipped.front()["reason"]));
      return found;
    });
    if (dir.empty()) {
      engine_.params.initialize(recipe_.run.seed);
      return std::nullopt;
    }
    LoadedCheckpoint loaded = load(dir);
    guard_.restore(loaded.state);
    saved_step_ = progress_.step;
    return loaded;
  }

  // Weights, optimizer state, progress and the loader position from a checkpoint.
  LoadedCheckpoint load(const std::string& dir) {
    std::vector<CheckpointTensor> tensors = engine_.device_tensors();
    LoadedCheckpoint loaded = load_checkpoint(dir, tensors);
    if (engine_.parallel)
      engine_.parallel->gather_weights();  // each rank loaded its shard
    else
      engine_.params.refresh_weights();
    const auto& ints = loaded.state.ints;
    auto get = [&](const char* key) {
      auto it = ints.find(key);
      if (it == ints.end()) fail("checkpoint {}: /state has no '{}'", dir, key);
      return it->second;
    };
    progress_.step = get("step");
    progress_.tokens = get("tokens");
    train_data_.set_position(get("loader_position"));
    return loaded;
  }

  // After guard.rollback_after skipped steps in a row: back to the newest intact checkpoint,
  // keeping the loader where it is, so the data read since (the offending window) is skipped.
  void roll_back() {
    report_save(writer_.wait());  // the newest checkpoint may still be being written
    int64_t step = progress_.step + 1;
    int64_t position = train_data_.position();
    std::string dir = agree_on_checkpoint(*world_.world, [&] {
      return find_verified_checkpoint(
          recipe_.checkpoint.dir, [&](const std::string& damaged, const std::string& reason) {
            log_->line(fmt::format("warning: skipped checkpoint {}: {}", damaged, reason));
          });
    });
    if (dir.empty())
      fail("guard: {} steps skipped in a row at step {}, and no committed checkpoint to roll "
           "back to (checkpoint.interval = {})",
           guard_.skipped_in_a_row(), step, recipe_.checkpoint.interval);
    LoadedCheckpoint loaded = load(dir);
    guard_.roll_back(step, dir, progress_.step, position - train_data_.position(), *log_);
    guard_.restore(loaded.state);
    train_data_.set_position(position);
    moe_phase_ = -1;  // set again from the step before the next one
    saved_step_ = progress_.step;
  }

  // A stop signal any rank received (the highest number): every rank stops after the same
  // step, since a signal may reach the ranks at different moments.
  int stop_signal() {
    int64_t signal[] = {stop_signals_.requested()};
    if (world_.size() > 1) world_.world->all_reduce_host(signal, ReduceOp::kMax);
    return int(signal[0]);
  }

  // The first stop signal: the step is done; save it (unless just saved) and return.
  void preempt(int signal) {
    log_->line(fmt::format("step {} | {}: saving a checkpoint, then exiting", progress_.step,
                           signal_name(signal)));
    log_->metrics({{"step", progress_.step}, {"event", "preempted"},
                   {"signal", signal_name(signal)}});
    if (saved_step_ != progress_.step) save();
    report_save(writer_.wait());
    log_->line(fmt::format("stopped by {} after step {}; resume with --resume auto",
                           signal_name(signal), progress_.step));
  }

  void announce(const std::optional<LoadedCheckpoint>& resumed) {
    bool cuda = engine_.device == Device::kCuda;
    // On a GPU: the bf16 dense datasheet rate of the H100/H200, as the PyTorch peer counts.
    // Only rank 0 reports MFU: the others need not compete for the cores measuring it.
    peak_flops_ = recipe_.log.peak_tflops > 0 ? recipe_.log.peak_tflops * 1e12
                  : cuda                      ? kHopperPeakFlops
                  : world_.leader()           ? measure_cpu_peak_flops()
                                              : 1.0;
    std::string where = cuda ? device::describe() : fmt::format("CPU, {} threads", threads_);
    log_->line(fmt::format(
        "sigma train: {} | {:.2f}M parameters | {:.3g} GFLOP/token | {} steps of {} tokens | "
        "{} | MFU against {:.1f} TFLOP/s",
        recipe_.run.name, plan_.total_params / 1e6, plan_.flops_per_token / 1e9,
        batches_.total_steps(), batches_.micro_batches_at(progress_.tokens) *
                                    batches_.tokens_per_micro_batch(),
        where, peak_flops_ / 1e12));
    if (moe_) {
      const MoeConfig& moe = recipe_.model.moe;
      std::string active;
      for (const PhaseCost& phase : plan_.moe_phases)
        active += fmt::format("{}{:.2f}M", active.empty() ? "" : " -> ", phase.active_params / 1e6);
      log_->line(fmt::format("moe: {} experts of width {} from layer {}, {} shared; {} active "
                             "parameters per phase",
                             moe.n_experts, moe.d_expert, moe.dense_layers, moe.n_shared_experts,
                             active));
    }
    if (cuda) {
      size_t planned = 0;
      for (const auto& [category, bytes] : plan_.bytes) planned += bytes;
      log_->line(fmt::format("gpu memory: {:.2f} GiB planned (sigma info), {:.2f} GiB allocated, "
                             "{:.2f} GiB in use on the GPU (CUDA context and libraries included)",
                             double(planned) / (1 << 30), double(device::peak_bytes()) / (1 << 30),
                             double(device::used_bytes()) / (1 << 30)));
    }
    if (engine_.parallel)
      log_->line(fmt::format("parallel: {} ranks ({}), dp {} with ZeRO-1, ep {}; {} gradient "
                             "buckets, {} overlapped with backward",
                             world_.size(), world_.world->name(), world_.dp, world_.ep,
                             engine_.parallel->plan().buckets.size(),
                             recipe_.parallelism.overlap_grad_reduce ? "reductions" : "none"));
    if (resumed)
      log_->line(fmt::format("resumed from {} at step {}", resumed->dir, progress_.step));
  }

  // The MoE layers of the model, in layer order (empty for a dense model).
  std::vector<MoeLayer*> moe_layers() {
    std::vector<MoeLayer*> layers;
    for (int64_t l = 0; l < recipe_.model.n_layers; ++l)
      if (MoeLayer* moe = engine_.model.moe_layer(l)) layers.push_back(moe);
    return layers;
  }

  // Before a step's first forward: the sparsification phase (a function of the step, so a
  // resumed run switches where an uninterrupted one does), fresh statistics, and for
  // global-batch LBL over several micro-batches the step's token counts.
  void prepare_moe_step(int64_t micro_batches, int64_t mine) {
    const MoeConfig& moe = recipe_.model.moe;
    int64_t phase = moe.phase_at(progress_.step, batches_.total_steps());
    if (phase != moe_phase_) {
      engine_.model.set_moe_phase(phase);
      log_->line(fmt::format("step {} | moe: phase {}/{}, top-k {} per layer", progress_.step + 1,
                             phase + 1, moe.num_phases(),
                             describe_top_k(moe.phase_top_k(phase), recipe_.model.n_layers)));
      moe_phase_ = phase;
    }
    for (MoeLayer* layer : moe_layers()) {
      layer->reset_step_stats();
      layer->set_global_counts({});
    }
    if (moe.lbl_scope == LblScope::kGlobalBatch && micro_batches > 1) routing_prepass(mine);
  }

  // Exact global-batch counts need every micro-batch's routing before the first backward:
  // a forward through the layers (no LM head) over this rank's micro-batches of the step,
  // whose tokens are kept for the real passes (models/moe/README.md weighs the cost).
  void routing_prepass(int64_t micro_batches) {
    Transformer& model = engine_.model;
    int64_t n = model.tokens_per_pass();
    prepass_tokens_.resize(size_t(micro_batches * n));
    prepass_targets_.resize(size_t(micro_batches * n));
    for (int64_t i = 0; i < micro_batches; ++i) {
      phase(fmt::format("step {}: routing pre-pass, micro-batch {}", progress_.step + 1, i + 1));
      train_data_.next(recipe_.train.micro_batch, prepass_tokens_.data() + i * n,
                       prepass_targets_.data() + i * n);
      std::copy_n(prepass_tokens_.data() + i * n, n, engine_.tokens_host());
      engine_.load_inputs();
      model.forward_layers();
    }
    // The step's counts: this rank's, summed over the data-parallel ranks.
    std::vector<MoeLayer*> layers = moe_layers();
    std::vector<std::vector<int64_t>> counts;
    for (MoeLayer* layer : layers) counts.push_back(layer->step_stats().counts);
    if (engine_.parallel) engine_.parallel->sum(counts);
    for (size_t i = 0; i < layers.size(); ++i) {
      layers[i]->set_global_counts(std::move(counts[i]));
      layers[i]->reset_step_stats();
    }
  }

  // One optimizer step over as many micro-batches as the batch schedule says; nullopt when
  // the guard skipped its update (the data is consumed all the same).
  std::optional<double> train_step() {
    Transformer& model = engine_.model;
    int64_t micro_batches = batches_.micro_batches_at(progress_.tokens);
    int64_t step_tokens = micro_batches * batches_.tokens_per_micro_batch();
    // Every token of the global batch weighs the same: the loss is their mean.
    float loss_scale = float(1.0 / double(step_tokens));
    // This rank's block of the step's micro-batches, read where one process would read it.
    auto [first, last] = engine_.parallel ? engine_.parallel->my_micro_batches(micro_batches)
                                          : std::pair<int64_t, int64_t>(0, micro_batches);
    int64_t step_start = train_data_.position(), mine = last - first;
    train_data_.set_position(step_start + first * recipe_.train.micro_batch);
    // The first micro-batch overwrites the gradients instead of adding to zeroed ones.
    engine_.params.mark_gradients_stale();
    prepass_tokens_.clear();
    prepass_targets_.clear();
    if (moe_) prepare_moe_step(micro_batches, mine);
    double loss_sum = 0;
    int64_t n = model.tokens_per_pass();
    for (int64_t i = 0; i < mine; ++i) {
      phase(fmt::format("step {}: micro-batch {}", progress_.step + 1, first + i + 1));
      if (prepass_tokens_.empty()) {
        train_data_.next(recipe_.train.micro_batch, engine_.tokens_host(), engine_.targets_host());
      } else {  // the routing pre-pass read this micro-batch already
        std::copy_n(prepass_tokens_.data() + i * n, n, engine_.tokens_host());
        std::copy_n(prepass_targets_.data() + i * n, n, engine_.targets_host());
      }
      engine_.load_inputs();
      loss_sum += model.forward(loss_scale);  // the LM head's backward fused in
      if (engine_.parallel && i == mine - 1) engine_.parallel->arm_last_backward();
      model.backward(loss_scale);
    }
    engine_.params.zero_stale_gradients();
    train_data_.set_position(step_start + micro_batches * recipe_.train.micro_batch);
    phase(fmt::format("step {}: gradient reduction and update", progress_.step + 1));
    if (engine_.parallel) {
      grad_norm_ = engine_.parallel->finish_gradients();
      engine_.parallel->sum(std::span<double>(&loss_sum, 1));
    } else {
      // One pass over the whole gradient arena: one host synchronisation per step.
      grad_norm_ = std::sqrt(ops::sum_squares(engine_.params.grads().whole(DType::kF32)));
    }
    double loss = loss_sum / double(step_tokens);
    // Loss and norm are the global batch's here, the same on every rank, so every rank skips
    // (or rolls back) together.
    if (!guard_.admit(progress_.step + 1, loss, grad_norm_, *log_)) return std::nullopt;
    double clip = recipe_.train.grad_clip;
    double grad_scale = clip > 0 && grad_norm_ > clip ? clip / (grad_norm_ + 1e-6) : 1.0;
    lr_ = lr_at(recipe_.lr_scheduler, recipe_.optimizer.lr, progress_.step, batches_.total_steps());
    if (engine_.parallel)
      engine_.parallel->step(lr_, grad_scale, progress_.step + 1);
    else
      engine_.optimizer->step(lr_, grad_scale, progress_.step + 1);
    // The bias update and the balance metrics see the whole global batch's statistics.
    if (moe_ && engine_.parallel) engine_.parallel->sum_moe_stats(moe_layers());
    for (MoeLayer* layer : moe_layers()) layer->update_bias();
    progress_.step += 1;
    progress_.tokens += step_tokens;
    last_step_tokens_ = step_tokens;
    return loss;
  }

  void log_step(double loss, double step_seconds, double mean_step_seconds) {
    double tok_per_s = double(last_step_tokens_) / step_seconds;
    double flops_per_token =
        moe_ ? plan_.moe_phases[size_t(moe_phase_)].flops_per_token : plan_.flops_per_token;
    // tok/s is the whole job's; MFU is per device (rank).
    double mfu = flops_per_token * tok_per_s / (peak_flops_ * world_.size());
    int64_t total = batches_.total_steps();
    double eta = mean_step_seconds * double(total - progress_.step);
    nlohmann::json row = {{"step", progress_.step},
                          {"tokens", progress_.tokens},
                          {"loss", loss},
                          {"lr", lr_},
                          {"grad_norm", grad_norm_},
                          {"tok_per_s", tok_per_s},
                          {"mfu", mfu},
                          {"step_ms", step_seconds * 1e3}};
    // The communication a step exposes: what backward did not hide of the gradient reduction,
    // and the weights' all-gather after the previous step's update.
    if (engine_.parallel) {
      row["grad_wait_ms"] = engine_.parallel->last_wait_ms();
      row["gather_ms"] = engine_.parallel->last_gather_ms();
    }
    if (engine_.device == Device::kCuda) {
      row["gpu_peak_gib"] = double(device::peak_bytes()) / double(1 << 30);
      row["gpu_used_gib"] = double(device::used_bytes()) / double(1 << 30);
    }
    std::string moe_summary = moe_ ? log_moe_balance(row) : "";
    warnings_.log_layers(progress_.step, row, *log_);
    log_->metrics(row);
    log_->progress(fmt::format("step {:>{}}/{} | loss {:.4f} | lr {:.3e} | grad norm {:.3f} | "
                               "{:.0f} tok/s | MFU {:.1f}% | ETA {}{}",
                               progress_.step, fmt::formatted_size("{}", total), total, loss, lr_,
                               grad_norm_, tok_per_s, 100 * mfu, format_duration(eta),
                               moe_summary));
  }

  // The step's balance per MoE layer into `row` (models/moe/README.md, "Metrics"); returns
  // the console summary of the worst layer (the largest busiest-expert deviation).
  std::string log_moe_balance(nlohmann::json& row) {
    row["moe.phase"] = moe_phase_;
    // The balancing losses of the step (every MoE layer's, summed over its forwards and, with
    // data parallelism, its ranks), per micro-batch: read here, not after each forward.
    double aux_sum = 0;
    int64_t worst = -1;
    double worst_max = 0, worst_min = 0;
    int64_t worst_idle = 0;
    for (int64_t l = 0; l < recipe_.model.n_layers; ++l) {
      MoeLayer* layer = engine_.model.moe_layer(l);
      if (!layer) continue;
      const MoeStepStats& stats = layer->step_stats();
      aux_sum += stats.aux_sum;
      LoadBalance balance = load_balance(stats.counts);
      double max_dev = balance.max_dev_pct, min_dev = balance.min_dev_pct;
      int64_t idle = balance.idle_experts;
      double forwards = double(stats.forwards);
      std::string prefix = fmt::format("moe.l{}.", l);
      row[prefix + "top_k"] = layer->top_k();
      row[prefix + "max_dev_pct"] = max_dev;
      row[prefix + "min_dev_pct"] = min_dev;
      row[prefix + "idle_experts"] = idle;
      row[prefix + "lbl"] = stats.lbl_sum / forwards;
      row[prefix + "entropy"] = stats.entropy_sum / forwards;
      if (worst < 0 || max_dev > worst_max) {
        worst = l;
        worst_max = max_dev;
        worst_min = min_dev;
        worst_idle = idle;
      }
    }
    double aux_loss = aux_sum / double(last_step_tokens_ / batches_.tokens_per_micro_batch());
    row["aux_loss"] = aux_loss;
    return fmt::format(" | aux {:.4f} | worst layer {}: busiest {:+.0f}%, idlest {:+.0f}%, {} idle",
                       aux_loss, worst, worst_max, worst_min, worst_idle);
  }

  void validate() {
    Transformer& model = engine_.model;
    phase(fmt::format("step {}: validation", progress_.step));
    // The same held-out batches every time (comparable numbers), split over the ranks.
    auto [first, last] = engine_.parallel ? engine_.parallel->my_micro_batches(recipe_.eval.batches)
                                          : std::pair<int64_t, int64_t>(0, recipe_.eval.batches);
    valid_data_->set_position(first * recipe_.train.micro_batch);
    double loss_sum = 0;
    for (int64_t i = first; i < last; ++i) {
      valid_data_->next(recipe_.train.micro_batch, engine_.tokens_host(), engine_.targets_host());
      engine_.load_inputs();
      loss_sum += model.forward();
    }
    if (engine_.parallel) engine_.parallel->sum(std::span<double>(&loss_sum, 1));
    double loss = loss_sum / double(recipe_.eval.batches * model.tokens_per_pass());
    log_->metrics({{"step", progress_.step}, {"tokens", progress_.tokens}, {"valid_loss", loss}});
    log_->line(fmt::format("step {} | validation loss {:.4f} ({} tokens)", progress_.step, loss,
                           recipe_.eval.batches * model.tokens_per_pass()));
  }

  void save() {
    phase(fmt::format("step {}: checkpoint", progress_.step));
    SaveRequest request;
    request.root = recipe_.checkpoint.dir;
    request.step = progress_.step;
    request.recipe_toml = recipe_.resolved_toml;
    request.keep = recipe_.checkpoint.keep;
    request.tensors = engine_.device_tensors();
    request.state.ints = {{"step", progress_.step},
                          {"tokens", progress_.tokens},
                          {"seed", int64_t(recipe_.run.seed)},
                          {"loader_position", train_data_.position()}};
    // The phase is recomputed from the step on resume; kept here for inspection.
    if (moe_) request.state.ints["moe_phase"] = moe_phase_;
    guard_.save(request.state);
    report_save(writer_.wait());  // one write at a time
    writer_.save(std::move(request));
    saved_step_ = progress_.step;
    if (!writer_.async()) report_save(writer_.poll());
  }

  // A finished checkpoint write: a line and a metrics row, or the run stops with the reason
  // (a full disk, say) and what is still safe.
  void report_save(std::optional<SaveOutcome> done) {
    if (!done) return;
    if (done->error) {
      std::string last = find_latest_checkpoint(recipe_.checkpoint.dir);
      std::string safe = last.empty() ? "there is no earlier checkpoint"
                                      : "the last committed checkpoint, " + last + ", is intact";
      try {
        std::rethrow_exception(done->error);
      } catch (const UserError& e) {
        fail("step {} | checkpoint not written: {}; {}", done->step, e.what(), safe);
      }
    }
    std::string how = writer_.async() ? fmt::format(" in the background, after a {:.2f} s copy",
                                                    done->snapshot_seconds)
                                      : "";
    log_->line(fmt::format("step {} | checkpoint {} ({:.2f} s{})", done->step, done->dir,
                           done->write_seconds, how));
    log_->metrics({{"step", done->step},
                   {"event", "checkpoint"},
                   {"checkpoint", done->dir},
                   {"write_s", done->write_seconds},
                   {"snapshot_s", done->snapshot_seconds}});
  }

  // What this rank is doing, for the watchdog (core/dist/watchdog.h).
  void phase(std::string what) { world_.watchdog->set_phase(std::move(what)); }

  const Recipe& recipe_;
  const TrainOptions& options_;
  World& world_;
  int threads_ = set_cpu_threads(int(recipe_.train.threads));
  Engine engine_;
  BatchSchedule batches_;
  DataLoader train_data_;
  std::optional<DataLoader> valid_data_;
  ModelPlan plan_;
  std::optional<RunLog> log_;
  Progress progress_;
  double peak_flops_ = 0, grad_norm_ = 0, lr_ = 0;
  int64_t last_step_tokens_ = 0;
  bool moe_ = recipe_.model.moe.enabled();
  int64_t moe_phase_ = -1;  // the sparsification phase in use; -1 before the first step
  // The step's micro-batches as the routing pre-pass read them (empty without a pre-pass).
  std::vector<int32_t> prepass_tokens_, prepass_targets_;
  Guard guard_{recipe_.guard};
  OpReport op_report_;
  EarlyWarnings warnings_{recipe_.guard, recipe_.log.expert_load_interval, engine_.model,
                          engine_.params};
  CheckpointWriter writer_{recipe_.checkpoint.async, *world_.world};
  int64_t saved_step_ = -1;  // the step of the newest save asked for (or loaded)
  StopSignals stop_signals_;
};

}  // namespace

void train(const Recipe& recipe, const TrainOptions& options) {
  validate_for_training(recipe);
  Recipe resolved = recipe;
  TrainConfig& t = resolved.train;
  if (t.device == DeviceKind::kAuto)
    t.device = device::cuda_available() ? DeviceKind::kCuda : DeviceKind::kCpu;
  if (t.device == DeviceKind::kCuda && !device::cuda_available())
    fail("train.device = \"cuda\": {}", device::describe());
  bool cuda = t.device == DeviceKind::kCuda;
  if (t.precision == Precision::kAuto) t.precision = cuda ? Precision::kBf16 : Precision::kFp32;
  if (cuda && t.precision != Precision::kBf16)
    fail("train.precision = \"fp32\" on CUDA: the CUDA engine trains in bf16 with fp32 master "
         "weights; use \"bf16\" or \"auto\"");
  if (!cuda && t.precision != Precision::kFp32)
    fail("train.precision = \"bf16\" needs a GPU; this run is on the CPU: use \"fp32\" or \"auto\"");
  World world = start_world(resolved.parallelism, cuda ? Device::kCuda : Device::kCpu,
                            resolved.run.out_dir);
  check_batch_split(resolved, world.dp, world.ep);
  // Ranks sharing a node share its cores, unless the recipe says otherwise.
  if (t.threads == 0 && world.launch.local_size > 1 && !cuda)
    t.threads = std::max<int64_t>(1, std::thread::hardware_concurrency() / world.launch.local_size);
  Trainer(resolved, options, world).run();
}

}  // namespace sigma
