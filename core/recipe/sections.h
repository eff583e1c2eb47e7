// The key table and the cross-field checks of every recipe section. Each is defined beside
// its struct (models/config.cpp, core/data/config.cpp, core/train/config.cpp,
// core/optim/config.cpp, core/checkpoint/config.cpp, core/train/guard_config.cpp); recipe.cpp
// puts them together.
//
// Checks run in this order, after every key has been read and range-checked, so each may
// rely on the sections before it: model, data, train, lr_scheduler, run, checkpoint,
// parallelism.
// A `resolve_*` function also fills in defaults that depend on other keys.
#pragma once

#include "core/checkpoint/config.h"
#include "core/data/config.h"
#include "core/dist/config.h"
#include "core/optim/config.h"
#include "core/recipe/schema.h"
#include "core/train/config.h"
#include "core/train/guard_config.h"
#include "models/config.h"

namespace sigma {

const schema::Section<RunConfig>& run_section();
const schema::Section<ModelConfig>& model_section();
const schema::Section<DataConfig>& data_section();
const schema::Section<TrainConfig>& train_section();
const schema::Section<OptimizerConfig>& optimizer_section();
const schema::Section<LrSchedulerConfig>& lr_scheduler_section();
const schema::Section<CheckpointConfig>& checkpoint_section();
const schema::Section<EvalConfig>& eval_section();
const schema::Section<LogConfig>& log_section();
const schema::Section<GuardConfig>& guard_section();
const schema::Section<ParallelismConfig>& parallelism_section();

// DiffQKV head counts divide n_q; d_qk is even for RoPE.
void check_model(const ModelConfig& model, const schema::Checker& check);
// Source paths are set; the tokenizer's ids fit in model.vocab_size. An empty source list
// is allowed here (`sigma info` needs no data): validate_for_training() rejects it.
void check_data(const DataConfig& data, const ModelConfig& model, const schema::Checker& check);
// Exactly one of steps/tokens; global batch and ramp in whole micro-batches (0 means one
// micro-batch, no accumulation); bf16 only on CUDA.
void resolve_train(TrainConfig& train, const DataConfig& data, const schema::Checker& check);
// kind = "phases" has phases whose fractions sum to 1.
void check_lr_scheduler(const LrSchedulerConfig& lr_scheduler, const schema::Checker& check);
// A name; out_dir defaults to runs/<name>.
void resolve_run(RunConfig& run, const schema::Checker& check);
// dir defaults to <run.out_dir>/checkpoints.
void resolve_checkpoint(CheckpointConfig& checkpoint, const RunConfig& run);
// ep > 1 only with experts, dividing the expert count and dp (the world size is checked
// when training starts: core/dist/world.cpp).
void check_parallelism(const ParallelismConfig& parallelism, const ModelConfig& model,
                       const schema::Checker& check);

}  // namespace sigma
