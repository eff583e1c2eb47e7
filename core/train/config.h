// The [run], [train], [eval] and [log] recipe sections, owned by the trainer.
// Recipe keys (docs, ranges) and cross-field checks: core/train/config.cpp.
#pragma once

#include "models/config.h"

#include <cstdint>
#include <string>

namespace sigma {

struct RunConfig {
  std::string name = "run";
  uint64_t seed = 1234;
  std::string out_dir;  // default: runs/<name>

  bool operator==(const RunConfig&) const = default;
};

enum class Precision { kAuto, kFp32, kBf16 };
enum class DeviceKind { kAuto, kCpu, kCuda };

struct TrainConfig {
  int64_t steps = 0;                // optimizer steps; 0 derives them from `tokens`
  int64_t tokens = 0;               // total training tokens (used when steps = 0)
  int64_t global_batch_tokens = 0;  // tokens per optimizer step; a multiple of micro_batch * seq_len
  int64_t micro_batch = 1;          // sequences per forward/backward pass
  double grad_clip = 1.0;           // global gradient-norm clip; 0 disables
  Precision precision = Precision::kAuto;
  DeviceKind device = DeviceKind::kAuto;
  // Batch-size ramp (Sigma ramped 4M -> 16M tokens): the global batch grows linearly from
  // batch_ramp_start_tokens to global_batch_tokens over the first batch_ramp_tokens tokens.
  int64_t batch_ramp_start_tokens = 0;  // 0 disables the ramp
  int64_t batch_ramp_tokens = 0;
  int64_t threads = 0;              // CPU threads; 0 = all cores
  Recompute recompute = Recompute::kNone;  // activations recomputed in backward

  bool operator==(const TrainConfig&) const = default;
};

struct EvalConfig {
  int64_t interval = 0;  // steps between validation passes; 0 disables
  int64_t batches = 8;   // micro-batches per validation pass

  bool operator==(const EvalConfig&) const = default;
};

struct LogConfig {
  int64_t interval = 1;     // steps between metric lines
  double peak_tflops = 0;   // MFU denominator; 0 = 989 on CUDA (H100/H200 bf16), measured SGEMM on CPU

  bool operator==(const LogConfig&) const = default;
};

}  // namespace sigma
