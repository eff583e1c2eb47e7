// A trained model restored for inference from a committed checkpoint: the run's recipe (kept
// in the checkpoint's index), its weights and expert biases, and its tokenizer.
//
// `path` may be a step directory, a checkpoints directory (its newest committed step) or a
// run directory (its checkpoints/). Only committed checkpoints load (core/checkpoint/README.md).
// The parameters are planned by a one-token Transformer, so a Decoder or a Transformer of any
// batch can rebind them (ParameterSet::rebind) without copying the weights. They live on the
// device asked for: on CUDA, fp32 values with their bf16 compute copies, as the trainer keeps
// them, and every model over them runs there.
#pragma once

#include "core/data/tokenizer.h"
#include "core/recipe/recipe.h"
#include "models/decoder.h"
#include "models/transformer.h"

#include <memory>
#include <string>

namespace sigma {

class TrainedModel {
 public:
  // Loads everything onto `device`; one UserError line on any problem.
  explicit TrainedModel(const std::string& path, Device device = Device::kCpu);

  const std::string& checkpoint_dir() const { return dir_; }
  int64_t step() const { return step_; }
  const Recipe& recipe() const { return recipe_; }
  const ModelConfig& config() const { return recipe_.model; }
  ParameterSet& params() { return params_; }
  Device device() const { return params_.device(); }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  // The tokenizer as the recipe names it: "byte", or the path of a tokenizer.json found here.
  const std::string& tokenizer_spec() const { return tokenizer_spec_; }
  // The progressive-sparsification phase the checkpoint was saved in (0 for dense models).
  int64_t moe_phase() const { return moe_phase_; }
  // The checkpoint's non-trainable state tensors (MoE expert biases), by name.
  std::vector<std::pair<std::string, Tensor>> state_tensors() { return planner_.state_tensors(); }

  // Copies the state tensors into a model built over params() (a Decoder, a Transformer),
  // and sets its MoE phase.
  template <typename Model>
  void restore_state(Model& model) {
    model.set_moe_phase(moe_phase_);
    copy_state(model.state_tensors());
  }

 private:
  void copy_state(const std::vector<std::pair<std::string, Tensor>>& into);

  std::string dir_;
  int64_t step_ = 0;
  Recipe recipe_;
  ParameterSet params_;
  Arena planner_acts_;
  Transformer planner_;  // one token: plans params_ and holds the loaded state tensors
  std::string tokenizer_spec_;
  std::unique_ptr<Tokenizer> tokenizer_;
  int64_t moe_phase_ = 0;
};

// A Decoder over a trained model's weights, laid out in its own arena on the model's device,
// state restored.
struct LoadedDecoder {
  LoadedDecoder(TrainedModel& model, int64_t capacity, int64_t chunk);
  Arena arena;
  Decoder decoder;
};

// --device of generate and eval: "auto" is CUDA when this build has the backend and a GPU
// is present, else the CPU (as train.device = "auto"); "cuda" without one is a UserError.
Device inference_device(const std::string& choice);

}  // namespace sigma
