// The KV-cache decoder on CUDA against the CPU decoder (test_decoder.cpp holds that one
// against a full-sequence pass and the trainer): the same weights (drawn on the host; bf16
// compute copies on the GPU), the same expert biases and tokens, three model shapes.
//
// Bound: ||logits_cuda - logits_cpu|| / ||logits_cpu|| < 2e-2. The CUDA decoder rounds to bf16
// (unit roundoff 2^-9, ~2e-3) every weight and every stored activation: the embedding, each
// norm's output, each projection, the K and V cache entries, the attention output, the MLP or
// expert rows and the residual stream, about ten roundings in a row per layer. Measured on
// the CPU for these models, rounding only the weights to bf16 moves the logits by 4e-3 to
// 6e-3; the activations' roundings, as many and as large, bring that to ~1e-2 (the trainer's
// parity test, test_cuda_model.cpp, sees the same scale), and 2e-2 leaves a factor of two.
// The bugs it must catch are larger: swapping two adjacent tokens (a position mix-up) moves
// the logits by 4e-2 to 1.1e-1, one wrong earlier token by 0.4 to 0.5. Log-probabilities
// move by at most twice the largest logit error: under the same bound relative to their size
// (about log V each).
#include "core/random.h"
#include "cuda_parity.h"
#include "decoder_config.h"
#include "infer/sampler.h"
#include "infer/trained_model.h"
#include "models/decoder.h"

#include <doctest/doctest.h>

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace sigma {
namespace {

constexpr double kLogitsBound = 2e-2;

// test/decoder_config.h's shapes at widths the CUDA grouped GEMM takes. init_std 0.1: far
// enough from uniform attention for the position mix-up above to show; at 0.2, AugQ's scores
// get so sharp that bf16 rounding of the weights alone moves the logits by 9e-2.
ModelConfig config_of(int kind) { return test::decoder_test_config(kind, 16, 96, 0.1); }

// A decoder with its own parameters on one device. initialize() draws on the host, so every
// device starts from the same values; the expert biases get the same nonzero values, so a
// decoder that lost them would show.
struct DeviceDecoder {
  ParameterSet params;
  Arena arena;
  Decoder decoder;
  DeviceDecoder(const ModelConfig& config, Device device, int64_t capacity, int64_t chunk)
      : params(device), arena(device), decoder(config, capacity, chunk) {
    decoder.bind_params(params);
    params.allocate();
    decoder.bind_params(params);
    params.initialize(7);
    decoder.layout(arena);
    arena.allocate();
    decoder.layout(arena);
    for (auto& [name, bias] : decoder.state_tensors()) {
      Buffer host(bias.bytes(), Device::kCpu);
      Tensor values = host.tensor(0, bias.shape, DType::kF32);
      for (int64_t e = 0; e < bias.numel(); ++e) values.f32()[e] = 0.05f * float(e % 3);
      device::copy(bias, values);
    }
  }
};

// What the decoder returns is fp32 host memory on every device.
std::vector<float> host_values(Tensor t) {
  REQUIRE(t.device == Device::kCpu);
  REQUIRE(t.dtype == DType::kF32);
  return std::vector<float>(t.f32(), t.f32() + t.numel());
}

double norm(const std::vector<float>& x) {
  double sum = 0;
  for (float v : x) sum += double(v) * double(v);
  return std::sqrt(sum);
}

std::vector<int32_t> random_tokens(int64_t n, int64_t vocab) {
  Rng rng(3);
  std::vector<int32_t> tokens;
  for (int64_t i = 0; i < n; ++i) tokens.push_back(int32_t(rng.below(uint64_t(vocab))));
  return tokens;
}

}  // namespace

TEST_CASE("cuda decoder: incremental, full-sequence and scored logits match the CPU decoder") {
  SIGMA_REQUIRE_GPU();
  for (int kind = 0; kind < 3; ++kind) {
    CAPTURE(kind);
    ModelConfig config = config_of(kind);
    const int64_t t = 13, chunk = 4, prompt = 10;
    std::vector<int32_t> tokens = random_tokens(t, config.vocab_size);
    DeviceDecoder cpu(config, Device::kCpu, t, chunk), gpu(config, Device::kCuda, t, chunk);
    CHECK(gpu.decoder.cache_dtype() == DType::kBF16);
    double worst = 0;
    auto check_close = [&](Tensor got, Tensor want) {
      double err = test::rel_error(host_values(got), host_values(want));
      worst = std::max(worst, err);
      CHECK(err < kLogitsBound);
    };

    // A prompt of 10 tokens (two chunk passes of 4, then two single steps), then one token at a
    // time: the cache of every pass size, at every position.
    std::span<const int32_t> all(tokens);
    check_close(gpu.decoder.next_logits(all.first(size_t(prompt))),
                cpu.decoder.next_logits(all.first(size_t(prompt))));
    for (int64_t i = prompt; i < t; ++i)
      check_close(gpu.decoder.next_logits(all.subspan(size_t(i), 1)),
                  cpu.decoder.next_logits(all.subspan(size_t(i), 1)));

    // Scoring after truncating back to a shared context (the multiple-choice pattern).
    std::vector<int32_t> targets(tokens.begin() + 4, tokens.end());
    targets.push_back(0);
    for (DeviceDecoder* d : {&cpu, &gpu}) d->decoder.truncate(3);
    std::vector<double> cpu_lp = cpu.decoder.token_logprobs(all.subspan(3), targets);
    std::vector<double> gpu_lp = gpu.decoder.token_logprobs(all.subspan(3), targets);
    double lp_err = test::rel_error(std::vector<float>(gpu_lp.begin(), gpu_lp.end()),
                                    std::vector<float>(cpu_lp.begin(), cpu_lp.end()));
    CHECK(lp_err < kLogitsBound);

    // The whole sequence in one pass: every row of the logits.
    DeviceDecoder cpu_whole(config, Device::kCpu, t, t), gpu_whole(config, Device::kCuda, t, t);
    check_close(gpu_whole.decoder.prefill_logits(all), cpu_whole.decoder.prefill_logits(all));
    MESSAGE(fmt::format("kind {}: worst logits rel error {:.2e}, log-probs {:.2e}", kind, worst,
                        lp_err));
  }
}

// Each decoder picks its own greedy tokens (through the Sampler, as generate() does). They may
// part only where the CPU's two best logits are closer than the bound allows the CUDA logits
// to move them: by |d_a| + |d_b| <= sqrt(2) ||d|| <= sqrt(2) x 2e-2 x ||logits||.
// The MoE model is held to that bound on fixed inputs (the test above) but not along its own
// generated sequence: there a token whose two best router scores nearly tie can pick another
// expert in bf16 (as in test_cuda_model.cpp), which moves that step's logits past the bound
// (measured on the H200: one step of 24); its error and agreement are reported, not checked.
TEST_CASE("cuda decoder: greedy generation picks the CPU's tokens wherever the margin is clear") {
  SIGMA_REQUIRE_GPU();
  for (int kind = 0; kind < 3; ++kind) {
    CAPTURE(kind);
    ModelConfig config = config_of(kind);
    const int64_t prompt = 6, steps = 24;
    std::vector<int32_t> tokens = random_tokens(prompt, config.vocab_size);
    DeviceDecoder cpu(config, Device::kCpu, prompt + steps, 4);
    DeviceDecoder gpu(config, Device::kCuda, prompt + steps, 4);
    Sampler greedy({});
    Tensor cpu_logits = cpu.decoder.next_logits(tokens);
    Tensor gpu_logits = gpu.decoder.next_logits(tokens);
    const bool routed = config.moe.enabled();
    int64_t agreed = 0;
    double worst = 0;
    for (; agreed < steps; ++agreed) {
      std::vector<float> want = host_values(cpu_logits), got = host_values(gpu_logits);
      double err = test::rel_error(got, want);
      worst = std::max(worst, err);
      if (!routed) CHECK(err < kLogitsBound);
      int32_t cpu_id = greedy.sample(want), gpu_id = greedy.sample(got);
      if (cpu_id != gpu_id) {
        std::vector<float> sorted = want;
        std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<>());
        double margin = double(sorted[0]) - double(sorted[1]);
        if (!routed)
          CHECK_MESSAGE(margin <= std::sqrt(2.0) * kLogitsBound * norm(want),
                        "step " << agreed << ": cpu " << cpu_id << ", cuda " << gpu_id
                                << " with a margin of " << margin);
        break;
      }
      cpu_logits = cpu.decoder.next_logits({&cpu_id, 1});
      gpu_logits = gpu.decoder.next_logits({&gpu_id, 1});
    }
    MESSAGE(fmt::format("kind {}: {} of {} greedy tokens the same, worst logits rel error {:.2e}",
                        kind, agreed, steps, worst));
  }
}

// Runs everywhere: the choice generate and eval make from --device.
TEST_CASE("cuda decoder: --device auto takes CUDA only where there is a GPU") {
  CHECK(inference_device("cpu") == Device::kCpu);
  CHECK_THROWS_AS(inference_device("gpu"), UserError);
  if (device::cuda_available()) {
    CHECK(inference_device("auto") == Device::kCuda);
    CHECK(inference_device("cuda") == Device::kCuda);
  } else {
    CHECK(inference_device("auto") == Device::kCpu);
    CHECK_THROWS_WITH_AS(inference_device("cuda"), doctest::Contains("--device cuda: no GPU"),
                         UserError);
  }
}

}  // namespace sigma
