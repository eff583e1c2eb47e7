// The cached attention op against the full causal one, and the decoder (KV cache, chunked
// prefill, single-token steps) against one full-sequence pass and the trainer's loss on the same
// weights.
#include "kernels/ops.h"
#include "models/decoder.h"
#include "decoder_config.h"
#include "tiny_model.h"

#include <doctest/doctest.h>

#include <cmath>
#include <vector>

using namespace sigma;

namespace {

struct Owned {
  Buffer buffer;
  Tensor t;
  Owned(Shape shape, Rng& rng) : buffer(size_t(shape.numel()) * 4, Device::kCpu) {
    t = buffer.tensor(0, shape, DType::kF32);
    for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = float(rng.normal());
  }
};

// test/decoder_config.h's shapes, far from uniform attention (init_std 0.3), so a wrong position
// or head shows.
ModelConfig config_of(int kind) { return test::decoder_test_config(kind, 4, 29, 0.3); }

}  // namespace

TEST_CASE("decoder: cached attention reproduces the rows of full causal attention") {
  Rng rng(5);
  const int64_t t = 9, n_q = 6, n_k = 2, n_v = 3, d_qk = 4, d_v = 5;
  Owned q({1, t, n_q, d_qk}, rng), k({1, t, n_k, d_qk}, rng), v({1, t, n_v, d_v}, rng);
  Owned out({1, t, n_q, d_v}, rng), lse({1, n_q, t}, rng);
  ops::attention_forward(out.t, lse.t, q.t, k.t, v.t);
  for (int64_t t_q : {int64_t(1), int64_t(4), t}) {
    Owned cached({1, t_q, n_q, d_v}, rng);
    Tensor q_last = q.t.view({t, n_q * d_qk}).slice_rows(t - t_q, t).view({1, t_q, n_q, d_qk});
    ops::attention_cached_forward(cached.t, q_last, k.t, v.t);
    const float* want = out.t.f32() + (t - t_q) * n_q * d_v;
    for (int64_t i = 0; i < cached.t.numel(); ++i) CHECK(cached.t.f32()[i] == want[i]);
  }
}

// A decoder over the Transformer's tensors (rebound) with its expert biases copied in.
struct BoundDecoder {
  Arena arena{Device::kCpu};
  Decoder decoder;
  BoundDecoder(test::TinyModel& full, int64_t capacity, int64_t chunk)
      : decoder(full.model.config(), capacity, chunk) {
    decoder.bind_params(full.params);
    decoder.layout(arena);
    arena.allocate();
    decoder.layout(arena);
    auto state = full.model.state_tensors();
    for (auto& [name, bias] : decoder.state_tensors())
      for (auto& [want_name, want] : state)
        if (name == want_name) ops::convert(bias, want);
  }
};

TEST_CASE("decoder: incremental logits equal one full-sequence pass, and its loss the trainer's") {
  for (int kind = 0; kind < 3; ++kind) {
    CAPTURE(kind);
    ModelConfig config = config_of(kind);
    const int64_t t = 13, chunk = 4;
    test::TinyModel full(config, 1, t);
    // A nonzero expert bias, so that the decoder must receive the checkpoint state.
    for (auto& [name, bias] : full.model.state_tensors())
      for (int64_t e = 0; e < bias.numel(); ++e) bias.f32()[e] = 0.05f * float(e % 3);
    double trainer_loss = full.model.forward();
    const int32_t* tokens = full.model.tokens().i32();
    const int32_t* targets = full.model.targets().i32();
    const int64_t vocab = config.vocab_size;

    // The trainer's summed loss from the decoder's log-probabilities of the same targets.
    BoundDecoder scorer(full, t, chunk);
    std::vector<double> all_logprobs =
        scorer.decoder.token_logprobs({tokens, size_t(t)}, {targets, size_t(t)});
    double decoder_loss = 0;
    for (double lp : all_logprobs) decoder_loss -= lp;
    CHECK(decoder_loss == doctest::Approx(trainer_loss).epsilon(1e-5));

    BoundDecoder whole(full, t, t);
    Tensor logits = whole.decoder.prefill_logits({tokens, size_t(t)});
    auto close = [&](const float* got, int64_t row) {
      const float* want = logits.f32() + row * vocab;
      double worst = 0;
      for (int64_t i = 0; i < vocab; ++i)
        worst = std::max(worst, double(std::fabs(got[i] - want[i])));
      return worst;
    };
    // A prompt of 10 tokens (two chunks of 4, then two single steps), then one token at a time.
    BoundDecoder stepper(full, t, chunk);
    Decoder& decoder = stepper.decoder;
    const int64_t prompt = 10;
    Tensor last = decoder.next_logits({tokens, size_t(prompt)});
    CHECK(close(last.f32(), prompt - 1) < 1e-5);
    for (int64_t i = prompt; i < t; ++i) {
      last = decoder.next_logits({tokens + i, 1});
      CHECK(close(last.f32(), i) < 1e-5);
    }
    CHECK(decoder.length() == t);

    // Scoring after truncating back to a shared context: log-softmax at the targets.
    decoder.truncate(3);
    std::vector<int32_t> next(tokens + 4, tokens + t);
    next.push_back(0);
    std::vector<double> logprobs = decoder.token_logprobs({tokens + 3, size_t(t - 3)}, next);
    for (int64_t i = 3; i < t; ++i) {
      const float* row = logits.f32() + i * vocab;
      double max = row[0], sum = 0;
      for (int64_t j = 0; j < vocab; ++j) max = std::max(max, double(row[j]));
      for (int64_t j = 0; j < vocab; ++j) sum += std::exp(double(row[j]) - max);
      double want = double(row[next[size_t(i - 3)]]) - max - std::log(sum);
      CHECK(std::fabs(logprobs[size_t(i - 3)] - want) < 1e-4);
    }
  }
}

TEST_CASE("decoder: the KV cache cost of DiffQKV against GQA") {
  ModelConfig c;
  c.n_layers = 26;
  c.attention = {32, 4, 16, 64, 64, 0, false};  // Sigma-1.5B (SIGMA-FAMILY.md section 1)
  KvCacheCost cost = kv_cache_cost(c, DType::kBF16);
  CHECK(cost.k_bytes == 4 * 64 * 2 * 26);
  CHECK(cost.v_bytes == 16 * 64 * 2 * 26);
  // (4 K, 16 V) against (16 K, 16 V): 37.5% less, as the paper says.
  CHECK(double(cost.k_bytes + cost.v_bytes) / double(cost.gqa_bytes) == doctest::Approx(0.625));
}
