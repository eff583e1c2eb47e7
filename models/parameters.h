// ParameterSet: every trainable tensor of a model, with its gradient, by its HF name.
//
// Values and gradients live in two planned arenas with identical layouts, so the optimizer
// can keep its moments in a third and a checkpoint can name every tensor. Model code binds
// its tensors in a layout pass that runs twice: once to plan (tensors have no data yet),
// once after allocate() to receive real memory (see core/tensor/arena.h).
#pragma once

#include "core/tensor/arena.h"
#include "kernels/ops.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace sigma {

enum class ParamInit { kNormal, kOnes };

// value is the fp32 master copy the optimizer updates and checkpoints keep; weight is what
// forward and backward read: value itself on the CPU, a bf16 copy on CUDA (DESIGN.md,
// "Precision"); grad is fp32 everywhere, so micro-batches accumulate without rounding.
struct Param {
  Tensor value;
  Tensor weight;
  Tensor grad;
  // True while grad still holds an earlier step's values (ParameterSet::mark_gradients_stale),
  // so the next op that writes it must overwrite it. Null until the binding pass.
  bool* grad_stale = nullptr;
};

// How the next backward op writing p's gradient must write it: kOverwrite the first time after
// ParameterSet::mark_gradients_stale, kAccumulate from then on.
ops::GradWrite take_grad_write(const Param& p);
// p's gradient for an op that can only accumulate into it (embedding, RMSNorm): zeroed first
// if it is stale.
Tensor accumulating_grad(const Param& p);
// The backward of a bias-free Linear with weight p (ops::matmul_backward): d_inp = d_out @ W
// (skipped if undefined; += with input_write kAccumulate, for a second Linear reading the same
// input), and p's gradient written as take_grad_write says.
void linear_backward(Tensor d_inp, const Param& p, Tensor d_out, Tensor inp,
                     ops::GradWrite input_write = ops::GradWrite::kOverwrite);

// Which rows of a whole tensor a rank holds: all of them, except for experts split over an
// expert-parallel group, where a rank holds experts [row_offset, row_offset + shape[0]) of
// global_rows (core/dist/world.h).
struct ParamRows {
  int64_t global_rows = 0;  // 0: the whole tensor
  int64_t row_offset = 0;
};

struct ParamInfo {
  std::string name;  // e.g. "model.layers.0.self_attn.q_proj.weight"
  Shape shape;       // what this rank holds
  ParamInit init = ParamInit::kNormal;
  double init_std = 0;
  bool decay = true;  // takes weight decay
  Param param;
  Shape global_shape;      // the whole tensor: shape, or more rows for split experts
  int64_t row_offset = 0;  // this rank's first row of the whole tensor

  bool split() const { return !(global_shape == shape); }
};

class ParameterSet {
 public:
  // The bf16 weights are aligned to 128 bytes, half the fp32 arenas' 256, so every weight sits
  // at the same element offset as its value and gradient: ZeRO-1's buckets address all three.
  explicit ParameterSet(Device device)
      : values_(device), weights_(device, 128), grads_(device) {}

  // Registers a parameter (planning pass) or returns it with memory (binding pass). `rows`
  // says which rows of a larger tensor `shape` is, for experts split over ranks.
  Param add(const std::string& name, Shape shape, ParamInit init, double init_std, bool decay,
            ParamRows rows = {});
  // Allocates values and gradients; the model must then run its layout pass again.
  void allocate();
  bool allocated() const { return values_.allocated(); }
  // After allocate(): another binding pass over the same tensors, for a second model
  // structure over the same weights (the decoder of models/decoder.h beside the trainer's).
  // It must add the same names in the same order; add() checks that.
  void rebind();

  // Fills every value from its init rule. Each tensor draws from its own stream, seeded by
  // (seed, name), so adding a parameter never changes the others' initial values; a rank
  // holding some rows of a tensor gets the values those rows have in the whole tensor.
  void initialize(uint64_t seed);
  void zero_grads();
  // Starts a step's gradients without zeroing the arena: every gradient is marked stale, and
  // the first backward op that writes it overwrites it (take_grad_write, accumulating_grad).
  // For the sigma-moe-tiny-8L bench that saves 13 GB of memset and 11 GB of reading back a step.
  void mark_gradients_stale();
  // Zeroes the gradients nothing has written since mark_gradients_stale (a data-parallel rank
  // with no micro-batch in a step), so the reduction and the norm see zeros, not old values.
  void zero_stale_gradients();
  // Rewrites every compute weight from its master value (after init or a checkpoint load;
  // the optimizer keeps them in step afterwards). Nothing to do on the CPU. With data
  // parallelism only a rank's own rows of the values are current (DataParallel).
  void refresh_weights();

  const std::vector<ParamInfo>& list() const { return params_; }
  int64_t num_elements() const;
  const Arena& values() const { return values_; }
  // Every compute weight as one flat tensor, alignment gaps included: bf16 on CUDA, the fp32
  // values themselves on the CPU.
  Tensor whole_weights() const {
    return separate_weights() ? weights_.whole(DType::kBF16) : values_.whole(DType::kF32);
  }
  const Arena& grads() const { return grads_; }
  Device device() const { return values_.device(); }
  // Compute weights are separate tensors (bf16) on CUDA only.
  bool separate_weights() const { return device() != Device::kCpu; }

 private:
  Arena values_;
  Arena weights_;
  Arena grads_;
  std::vector<ParamInfo> params_;
  std::unique_ptr<bool[]> grad_stale_;  // one flag per parameter, from allocate() on
  size_t cursor_ = 0;  // binding pass: index of the next parameter
};

}  // namespace sigma
