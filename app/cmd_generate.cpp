// sigma generate CKPT_OR_RUN --prompt TEXT [--max-new-tokens N] [--temperature T] [--top-k K]
//   [--top-p P] [--seed S] [--stop STR]... [--device auto|cpu|cuda]: text streamed to stdout,
//   statistics to stderr.
#include "app/commands.h"
#include "infer/generation.h"
#include "infer/trained_model.h"
#include "kernels/threads.h"

#include <fmt/format.h>

#include <cstdio>
#include <memory>

namespace sigma::app {

namespace {

struct GenerateArgs {
  std::string checkpoint;
  std::string prompt;
  GenerationConfig generation;
  int64_t chunk = 64;
  int64_t threads = 0;
  std::string device = "auto";
};

void run_generate(const GenerateArgs& args) {
  TrainedModel model(args.checkpoint, inference_device(args.device));
  set_cpu_threads(int(args.threads > 0 ? args.threads : model.recipe().train.threads));
  std::vector<int32_t> prompt = model.tokenizer().encode(args.prompt);
  int64_t capacity =
      generation_capacity(std::max<int64_t>(1, int64_t(prompt.size())), args.generation);
  LoadedDecoder loaded(model, capacity, args.chunk);
  const AttentionConfig& a = model.config().attention;
  DType cache_dtype = loaded.decoder.cache_dtype();
  KvCacheCost cost = kv_cache_cost(model.config(), cache_dtype);
  int64_t cache = cost.k_bytes + cost.v_bytes;
  fmt::print(stderr,
             "sigma generate: {} (step {}) on {} | KV cache {} bytes/token {} (K {} heads x {}, V "
             "{} heads x {}, {} layers); GQA with {} K heads: {} bytes/token, {:.1f}% saved\n",
             model.checkpoint_dir(), model.step(), device_name(model.device()), cache,
             cache_dtype == DType::kBF16 ? "bf16" : "fp32", a.n_k, a.d_qk, a.n_v, a.d_v,
             model.config().n_layers, a.n_v, cost.gqa_bytes,
             100.0 * (1.0 - double(cache) / double(cost.gqa_bytes)));
  Generation out = generate(loaded.decoder, model.tokenizer(), args.prompt, args.generation,
                            [](std::string_view piece) {
                              fmt::print("{}", piece);
                              std::fflush(stdout);
                            });
  fmt::print("\n");
  fmt::print(stderr,
             "sigma generate: prompt {} tokens in {:.3f} s | {} new tokens in {:.3f} s ({:.1f} "
             "tok/s) | finish: {}\n",
             out.prompt_tokens, out.prefill_seconds, out.new_tokens, out.decode_seconds,
             out.decode_seconds > 0 ? double(out.new_tokens) / out.decode_seconds : 0.0,
             finish_reason_name(out.finish));
}

}  // namespace

void add_generate_command(CLI::App& app) {
  auto args = std::make_shared<GenerateArgs>();
  CLI::App* cmd = app.add_subcommand("generate", "Generate text from a trained checkpoint");
  cmd->add_option("checkpoint", args->checkpoint,
                  "A committed step directory, a checkpoints directory or a run directory")
      ->required();
  cmd->add_option("--prompt", args->prompt, "The text to continue")->required();
  SamplingConfig& s = args->generation.sampling;
  cmd->add_option("--max-new-tokens", args->generation.max_new_tokens, "Token budget (default 128)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--temperature", s.temperature, "0 = greedy (default); > 0 samples");
  cmd->add_option("--top-k", s.top_k, "Sample among the k most likely tokens; 0 = all");
  cmd->add_option("--top-p", s.top_p, "Nucleus sampling: the smallest set of mass >= p");
  cmd->add_option("--seed", s.seed, "Sampling seed (the same seed gives the same text)");
  cmd->add_option("--stop", args->generation.stop, "Stop before this text (repeatable)")
      ->allow_extra_args(false);
  cmd->add_option("--chunk", args->chunk, "Prompt tokens per prefill pass (default 64)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--threads", args->threads, "CPU threads; 0 = the recipe's train.threads");
  cmd->add_option("--device", args->device, "auto (CUDA when there is a GPU), cpu or cuda")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  cmd->callback([args] { run_generate(*args); });
}

}  // namespace sigma::app
