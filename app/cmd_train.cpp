// sigma train RECIPE [--set key=value]... [--resume auto|PATH] [--out DIR] [--stop-at-step N]
#include "app/commands.h"
#include "core/error.h"
#include "core/recipe/recipe.h"
#include "core/train/trainer.h"

#include <memory>

namespace sigma::app {

namespace {
struct TrainArgs {
  std::string recipe;
  std::vector<std::string> overrides;
  std::string out_dir;
  std::string device;
  TrainOptions options;
};
}  // namespace

void add_train_command(CLI::App& app) {
  auto args = std::make_shared<TrainArgs>();
  CLI::App* cmd = app.add_subcommand("train", "Train a model from a TOML recipe");
  cmd->add_option("recipe", args->recipe, "Recipe file (TOML)")->required();
  cmd->add_option("--set", args->overrides, "Override a recipe key: section.key=value")
      ->allow_extra_args(false);
  cmd->add_option("--resume", args->options.resume,
                  "auto: continue from the newest committed checkpoint, if any; or a checkpoint path");
  cmd->add_option("--out", args->out_dir, "Run directory (same as --set run.out_dir=DIR)");
  cmd->add_option("--device", args->device, "cpu or cuda (same as --set train.device=...)")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  cmd->add_flag("--profile-ops", args->options.profile_ops,
               "Time every op of the steps after the first and log where the step time goes");
  cmd->add_option("--stop-at-step", args->options.stop_at_step,
                  "Save a checkpoint after this step and exit, as if preempted");
  cmd->callback([args] {
    std::vector<std::string> overrides = args->overrides;
    if (!args->out_dir.empty()) overrides.push_back("run.out_dir=" + args->out_dir);
    if (!args->device.empty()) overrides.push_back("train.device=" + args->device);
    Recipe recipe;
    try {
      recipe = load_recipe(args->recipe, overrides);
    } catch (const UserError& e) {
      throw EveryRankError(e.what());  // every rank reads the same recipe: say it once
    }
    train(recipe, args->options);
  });
}

}  // namespace sigma::app
