// The Sigma decoder for generation and scoring: incremental forward passes over a KV cache
// that keeps K and V apart, with their own head counts (DiffQKV, Sigma paper section 2 and
// SIGMA-FAMILY.md section 1: K [S, n_k, d_qk] and V [S, n_v, d_v] per layer, never repeated
// to n_q heads, so (4 K, 16 V) heads cache 37.5% less than GQA with 16 of each).
//
// It binds the same parameter tensors as Transformer (same names, same order; a
// ParameterSet the trainer bound can be rebound here) and runs the same ops, plus
// ops::attention_cached_forward for new queries over the cache. Batch 1.
//
// Shape legend: N tokens of one pass, D d_model, V vocab, S cache capacity,
// Q = n_q*d_qk, K = n_k*d_qk, Vh = n_v*d_v, O = n_q*d_v, A = d_augq.
// Passes come in two sizes, each with its own MLP/MoE blocks (those plan a fixed token count):
// `chunk` tokens (prompt prefill, batched matmuls) and 1 token (decoding). A call that
// appends n tokens runs n / chunk chunk passes, then single-token passes for the rest.
// It runs on the arena's device, with the trainer's precision (DESIGN.md, "Precision"):
// activations and the KV caches in activation_dtype (bf16 on CUDA), norm statistics, logits
// and losses in fp32. Token ids go in, and logits and log-probabilities come out, through
// host memory the decoder owns, so callers never touch device memory.
// Leaves out: batched decoding of several sequences, paged caches, selective V fetching.
#pragma once

#include "core/tensor/arena.h"
#include "models/attention.h"
#include "models/config.h"
#include "models/mlp.h"
#include "models/moe/moe_layer.h"
#include "models/parameters.h"

#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace sigma {

// KV-cache bytes per token over all layers, and what GQA with n_v K heads would take.
struct KvCacheCost {
  int64_t k_bytes = 0, v_bytes = 0;
  int64_t gqa_bytes = 0;  // K with n_v heads of d_qk, as GQA must have to keep n_v V heads
};
KvCacheCost kv_cache_cost(const ModelConfig& config, DType dtype);

class Decoder {
 public:
  // capacity: the longest sequence (prompt + generated) the cache holds.
  Decoder(const ModelConfig& config, int64_t capacity, int64_t chunk);

  // Plans the parameters (fresh set) or, once the set is allocated, binds both pass sizes
  // to its tensors (rebinding it; it may have been bound by a Transformer before).
  void bind_params(ParameterSet& params);
  // Caches and activations on the arena's device; runs twice like every layout pass.
  void layout(Arena& arena);
  // What the KV caches hold: activation_dtype of the arena's device (after layout).
  DType cache_dtype() const { return k_cache_SK_.front().dtype; }

  // Progressive-sparsification phase of every MoE layer (models/moe/README.md).
  void set_moe_phase(int64_t phase);
  // The non-trainable state (MoE expert biases) of every MoE block, by checkpoint name; a
  // name appears once per pass size, and each must receive the checkpoint's value.
  std::vector<std::pair<std::string, Tensor>> state_tensors();

  int64_t length() const { return length_; }
  int64_t capacity() const { return capacity_; }
  // Forgets positions from `length` on (e.g. back to a shared context).
  void truncate(int64_t length);

  // Appends tokens and returns the logits [1, V] after the last one: fp32 in host memory,
  // valid until the next call. A UserError if the cache would overflow.
  Tensor next_logits(std::span<const int32_t> tokens);
  // Appends exactly `chunk` tokens in one pass and returns the logits of every one [chunk, V]
  // (fp32 host memory, valid until the next call): a whole sequence scored at once, as a
  // checker wants it.
  Tensor prefill_logits(std::span<const int32_t> tokens);
  // Appends tokens; returns log p(targets[i] | everything up to tokens[i]) per token.
  std::vector<double> token_logprobs(std::span<const int32_t> tokens,
                                     std::span<const int32_t> targets);

 private:
  // Everything one pass size needs: its MLP/MoE blocks and activations shared by the layers.
  struct Pass {
    int64_t tokens = 0;
    std::vector<std::optional<Mlp>> mlp;
    std::vector<std::optional<MoeLayer>> moe;
    Tensor tokens_N, positions_N, targets_N, losses_N;
    Tensor x_ND, h_ND, rstd_N, branch_ND;
    Tensor q_NQ, gate_NA, up_NA, act_NA, qaug_NQ, qnorm_NQ, qrstd, k_NK, knorm_NK, krstd;
    Tensor v_NVh, qrope_NQ, y_NO, final_ND, final_rstd_N, logits_NV;
  };
  // Which passes of an append compute their logits: only the final one (decoding: a prompt's
  // earlier passes need none), or each (scoring).
  enum class LogitsOf { kFinalPass, kEveryPass };

  void bind_all(ParameterSet& params, Pass& pass);
  void layout_pass(Arena& arena, Pass& pass);
  void layout_host(Device device);
  // Runs the layers over pass.tokens tokens at positions length_ .. and advances length_.
  void run(Pass& pass, const int32_t* tokens);
  void attend(Pass& pass, int64_t layer, Tensor out_ND);
  // The final norm and LM head over every row of the last run: pass.logits_NV.
  void head(Pass& pass);
  // Calls run() over `tokens` in chunk and single-token passes, and head() after the passes
  // `logits` names; `each(pass, first)` after each pass.
  template <typename Each>
  void append(std::span<const int32_t> tokens, LogitsOf logits, Each each);
  // Host memory with t's values (f32): t itself on the CPU, else a copy into `host`'s first rows.
  static Tensor on_host(Tensor t, Tensor host);

  const ModelConfig& config_;
  int64_t capacity_, length_ = 0;
  std::vector<Attention> attention_;  // parameters only: the decoder runs its own cached path
  Param embed_tokens_, final_norm_, lm_head_;
  std::vector<Param> input_layernorm_, post_attention_layernorm_;
  std::vector<Tensor> k_cache_SK_, v_cache_SV_;  // one per layer
  Pass chunk_, step_;
  // The host side of a pass ([chunk] each): ids are written here and copied in; on a GPU,
  // logits [chunk, V] and losses come back here.
  Arena host_{Device::kCpu};
  Tensor host_tokens_N_, host_positions_N_, host_targets_N_, host_logits_NV_, host_losses_N_;
};

}  // namespace sigma
