// The [run], [train], [eval] and [log] recipe keys and their cross-field checks.
// Leaves out: how the trainer uses them (trainer.cpp, batch_schedule.cpp).
#include "core/recipe/sections.h"

#include <fmt/format.h>

#include <filesystem>

namespace sigma {

using schema::Range;

const schema::Section<RunConfig>& run_section() {
  static const schema::Section<RunConfig> section = [] {
    schema::Section<RunConfig> run("What the run is called, its seed and where it writes.");
    run.key("name", &RunConfig::name, "run name; names the default run directory")
        .key("seed", &RunConfig::seed, "seeds initialisation and data order")
        .key("out_dir", &RunConfig::out_dir,
             "run directory (recipe.toml, metrics.jsonl, train.log, checkpoints); "
             "empty means `runs/<run.name>`");
    return run;
  }();
  return section;
}

const schema::Section<TrainConfig>& train_section() {
  static const schema::Section<TrainConfig> section = [] {
    schema::Section<TrainConfig> train("How long to train, the batch, precision and device.");
    train
        .key("steps", &TrainConfig::steps, "optimizer steps; set exactly one of steps and tokens",
             Range::at_least(0), "steps")
        .key("tokens", &TrainConfig::tokens,
             "training tokens, used when steps = 0; the step count follows from the batch ramp",
             Range::at_least(0), "tokens")
        .key("global_batch_tokens", &TrainConfig::global_batch_tokens,
             "tokens per optimizer step, a multiple of micro_batch * data.seq_len "
             "(gradient accumulation); 0 means one micro-batch",
             Range::at_least(0), "tokens")
        .key("micro_batch", &TrainConfig::micro_batch,
             "sequences per forward/backward pass", Range::at_least(1), "sequences")
        .key("grad_clip", &TrainConfig::grad_clip, "global gradient-norm clip; 0 disables",
             Range::at_least(0))
        .key("precision", &TrainConfig::precision,
             "fp32 everywhere (the CPU engine), or bf16 weights and activations with fp32 master "
             "weights, gradients and optimizer state (the CUDA engine); auto picks the device's",
             {{Precision::kAuto, "auto"}, {Precision::kFp32, "fp32"}, {Precision::kBf16, "bf16"}})
        .key("device", &TrainConfig::device, "where to train; auto picks CUDA when present",
             {{DeviceKind::kAuto, "auto"}, {DeviceKind::kCpu, "cpu"}, {DeviceKind::kCuda, "cuda"}})
        .key("batch_ramp_start_tokens", &TrainConfig::batch_ramp_start_tokens,
             "global batch at the start of the ramp, a multiple of micro_batch * data.seq_len "
             "below global_batch_tokens; 0 disables the ramp",
             Range::at_least(0), "tokens")
        .key("batch_ramp_tokens", &TrainConfig::batch_ramp_tokens,
             "training tokens over which the batch grows linearly to global_batch_tokens",
             Range::at_least(0), "tokens")
        .key("threads", &TrainConfig::threads, "CPU threads; 0 uses every core",
             Range::at_least(0))
        .key("recompute", &TrainConfig::recompute,
             "activations recomputed in backward to save memory: none; attention (each layer's "
             "attention block); layer (whole layers, MoE blocks excepted)",
             {{Recompute::kNone, "none"}, {Recompute::kAttention, "attention"},
              {Recompute::kLayer, "layer"}});
    return train;
  }();
  return section;
}

const schema::Section<EvalConfig>& eval_section() {
  static const schema::Section<EvalConfig> section = [] {
    schema::Section<EvalConfig> eval("Validation loss on the held-out documents during training.");
    eval.key("interval", &EvalConfig::interval, "steps between validation passes; 0 disables",
             Range::at_least(0), "steps")
        .key("batches", &EvalConfig::batches, "micro-batches per validation pass",
             Range::at_least(1));
    return eval;
  }();
  return section;
}

const schema::Section<LogConfig>& log_section() {
  static const schema::Section<LogConfig> section = [] {
    schema::Section<LogConfig> log("Metric lines (train.log, metrics.jsonl).");
    log.key("interval", &LogConfig::interval, "steps between metric lines", Range::at_least(1),
            "steps")
        .key("peak_tflops", &LogConfig::peak_tflops,
             "MFU denominator; 0 uses 989 on CUDA (H100/H200 bf16) and a measured SGEMM on CPU",
             Range::at_least(0), "TFLOP/s");
    return log;
  }();
  return section;
}

void resolve_train(TrainConfig& train, const DataConfig& data, const schema::Checker& check) {
  if ((train.steps > 0) == (train.tokens > 0))
    check.fail("train.steps",
               train.steps > 0
                   ? fmt::format("both train.steps = {} and train.tokens = {} are set; allowed: "
                                 "exactly one of them > 0 (set the other to 0)",
                                 train.steps, train.tokens)
                   : std::string("neither train.steps nor train.tokens is set; allowed: exactly "
                                 "one of them > 0"));
  int64_t micro_tokens = train.micro_batch * data.seq_len;
  std::string unit = fmt::format("train.micro_batch * data.seq_len = {} * {} = {}",
                                 train.micro_batch, data.seq_len, micro_tokens);
  if (train.global_batch_tokens == 0) train.global_batch_tokens = micro_tokens;
  if (train.global_batch_tokens % micro_tokens != 0)
    check.fail("train.global_batch_tokens",
               fmt::format("{} is not a multiple of {}; allowed: a positive multiple of {}",
                           train.global_batch_tokens, unit, micro_tokens));
  if (train.batch_ramp_start_tokens > 0) {
    if (train.batch_ramp_start_tokens % micro_tokens != 0)
      check.fail("train.batch_ramp_start_tokens",
                 fmt::format("{} is not a multiple of {}; allowed: 0 (no ramp) or a multiple "
                             "of {}",
                             train.batch_ramp_start_tokens, unit, micro_tokens));
    if (train.batch_ramp_start_tokens >= train.global_batch_tokens)
      check.fail("train.batch_ramp_start_tokens",
                 fmt::format("{} is not below train.global_batch_tokens = {}; allowed: 0 (no "
                             "ramp) or less than the global batch",
                             train.batch_ramp_start_tokens, train.global_batch_tokens));
    if (train.batch_ramp_tokens == 0)
      check.fail("train.batch_ramp_tokens",
                 "0 while train.batch_ramp_start_tokens is set; allowed: > 0, the tokens over "
                 "which the batch grows");
  }
  if (train.precision == Precision::kBf16 && train.device == DeviceKind::kCpu)
    check.fail("train.precision",
               "\"bf16\" needs the CUDA engine; allowed with train.device = \"cpu\": \"fp32\", \"auto\"");
  if (train.precision == Precision::kFp32 && train.device == DeviceKind::kCuda)
    check.fail("train.precision",
               "\"fp32\" on CUDA: the CUDA engine keeps weights and activations in bf16 (fp32 "
               "master weights); allowed with train.device = \"cuda\": \"bf16\", \"auto\"");
}

void resolve_run(RunConfig& run, const schema::Checker& check) {
  if (run.name.empty()) check.fail("run.name", "empty; allowed: any non-empty name");
  if (run.out_dir.empty()) run.out_dir = (std::filesystem::path("runs") / run.name).string();
}

}  // namespace sigma
