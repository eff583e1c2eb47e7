// sigma info RECIPE: parameters, FLOPs per token and the memory plan per rank, before
// anything runs; sigma info --keys: the recipe key reference.
#include "app/commands.h"
#include "core/recipe/recipe.h"
#include "kernels/device.h"
#include "models/model_plan.h"

#include <fmt/format.h>

#include <map>
#include <memory>

namespace sigma::app {

namespace {

std::string human_bytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024 && u < 4) bytes /= 1024, ++u;
  return fmt::format("{:.2f} {}", bytes, units[u]);
}

std::string human_count(double n) {
  if (n >= 1e9) return fmt::format("{:.3f}B", n / 1e9);
  if (n >= 1e6) return fmt::format("{:.3f}M", n / 1e6);
  return fmt::format("{:.0f}", n);
}

void print_info(const Recipe& recipe) {
  const ModelConfig& m = recipe.model;
  const AttentionConfig& a = m.attention;
  // The engine the recipe would train on: "auto" means the GPU when this machine has one.
  DeviceKind kind = recipe.train.device;
  if (kind == DeviceKind::kAuto)
    kind = device::cuda_available() ? DeviceKind::kCuda : DeviceKind::kCpu;
  bool cuda = kind == DeviceKind::kCuda;
  ModelPlan plan = plan_model(m, recipe.train.micro_batch, recipe.data.seq_len,
                              cuda ? Device::kCuda : Device::kCpu, recipe.train.recompute);
  fmt::print("recipe      {}\n", recipe.source_path);
  fmt::print("model       {} layers, d_model {}, d_ff {}, vocab {}{}\n", m.n_layers, m.d_model,
             m.d_ff, m.vocab_size, m.tie_embeddings ? ", tied embeddings" : "");
  fmt::print("attention   heads q/k/v {}/{}/{}, d_qk {}, d_v {}{}{}\n", a.n_q, a.n_k, a.n_v, a.d_qk,
             a.d_v, a.d_augq > 0 ? fmt::format(", AugQ {}", a.d_augq) : "",
             a.qk_norm ? ", QK-norm" : "");
  fmt::print("parameters  {} total, {} embedding, {} active per token\n",
             human_count(double(plan.total_params)), human_count(double(plan.embedding_params)),
             human_count(double(plan.active_params)));
  fmt::print("FLOPs       {:.4g} GFLOP per token at seq_len {} (6 x active + attention)\n",
             plan.flops_per_token / 1e9, recipe.data.seq_len);
  const MoeConfig& moe = m.moe;
  if (moe.enabled()) {
    fmt::print("moe         {} experts of width {} in layers {}-{}, {} shared{}, {} router{}\n",
               moe.n_experts, moe.d_expert, moe.dense_layers, m.n_layers - 1, moe.n_shared_experts,
               moe.n_shared_experts > 0 ? fmt::format(" of width {}", moe.shared_width()) : "",
               moe.score == RouterScore::kSoftmax ? "softmax" : "sigmoid",
               moe.renormalize ? ", renormalised" : "");
    for (size_t i = 0; i < plan.moe_phases.size(); ++i) {
      const PhaseCost& phase = plan.moe_phases[i];
      std::string until = i < moe.phases.size()
                              ? fmt::format("until {:g}% of steps", 100 * moe.phases[i].until)
                              : std::string("to the end");
      // Papers often quote activated parameters without the LM head: both are shown.
      fmt::print("  phase {}   {}, top-k {}: {} active ({} without the LM head), {:.4g} GFLOP "
                 "per token\n",
                 i + 1, until, describe_top_k(phase.top_k, m.n_layers),
                 human_count(double(phase.active_params)),
                 human_count(double(phase.active_params - m.vocab_size * m.d_model)),
                 phase.flops_per_token / 1e9);
    }
  }
  fmt::print("batch       micro-batch {} x {} tokens, global {} tokens\n", recipe.train.micro_batch,
             recipe.data.seq_len, recipe.train.global_batch_tokens);
  fmt::print("memory per rank ({}, 1 rank):\n",
             cuda ? "CUDA engine: bf16 activations and weights, fp32 master weights" : "fp32 CPU engine");
  auto print_total = [](const std::map<std::string, size_t>& categories) {
    size_t total = 0;
    for (const auto& [category, bytes] : categories) {
      fmt::print("  {:<24} {:>12}\n", category, human_bytes(double(bytes)));
      total += bytes;
    }
    fmt::print("  {:<24} {:>12}\n", "total", human_bytes(double(total)));
  };
  // The checkpoint writer's host snapshot of the state (fp32 weights and moments,
  // core/checkpoint/async_writer.h): made from a GPU always, on the CPU when writes are async.
  // (A resume on a GPU reads one tensor at a time through a host buffer.)
  size_t state = plan.bytes.at("weights") + plan.bytes.at("optimizer state");
  std::map<std::string, size_t> host;
  if (cuda || recipe.checkpoint.async) host["checkpoint copy"] = state;
  if (cuda) {
    print_total(plan.bytes);
    if (!host.empty()) {
      fmt::print("host memory for checkpoints:\n");
      print_total(host);
    }
  } else {
    auto categories = plan.bytes;
    categories.insert(host.begin(), host.end());
    print_total(categories);
  }
}

}  // namespace

void add_info_command(CLI::App& app) {
  auto recipe_path = std::make_shared<std::string>();
  auto overrides = std::make_shared<std::vector<std::string>>();
  auto keys = std::make_shared<bool>(false);
  CLI::App* cmd = app.add_subcommand("info", "Print a recipe's model size, FLOPs and memory plan");
  cmd->add_option("recipe", *recipe_path, "Recipe file (TOML)");
  cmd->add_option("--set", *overrides, "Override a recipe key: section.key=value");
  cmd->add_flag("--keys", *keys, "Print the reference of every recipe key (Markdown)");
  cmd->callback([=] {
    if (*keys) {
      fmt::print("{}", recipe_key_reference());
      return;
    }
    if (recipe_path->empty()) throw CLI::RequiredError("recipe");
    print_info(load_recipe(*recipe_path, *overrides));
  });
}

}  // namespace sigma::app
