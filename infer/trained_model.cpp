#include "infer/trained_model.h"

#include "core/checkpoint/checkpoint.h"
#include "core/checkpoint/index.h"
#include "kernels/device.h"
#include "kernels/ops.h"

#include <filesystem>

namespace sigma {

namespace fs = std::filesystem;

namespace {

std::string resolve(const std::string& path) {
  if (!fs::exists(path)) fail("{}: no such checkpoint or run directory", path);
  fs::path run_checkpoints = fs::path(path) / "checkpoints";
  if (fs::is_directory(run_checkpoints) && !fs::exists(fs::path(path) / "index.h5"))
    return resolve_checkpoint(run_checkpoints.string());
  return resolve_checkpoint(path);
}

// The recipe's tokenizer: as written (relative to the working directory, as the trainer read
// it), else relative to the run directory (step dir / .. / ..).
std::string find_tokenizer(const std::string& spec, const std::string& dir) {
  if (spec == "byte" || fs::exists(spec)) return spec;
  fs::path beside_run = fs::path(dir).parent_path().parent_path() / spec;
  if (fs::exists(beside_run)) return beside_run.string();
  fail("{}: the run's tokenizer {} is not found (from here or beside the run)", dir, spec);
}

}  // namespace

TrainedModel::TrainedModel(const std::string& path, Device device)
    : dir_(resolve(path)),
      recipe_(parse_recipe(Index((fs::path(dir_) / "index.h5").string()).recipe_toml(),
                           dir_ + "/index.h5 (recipe)")),
      params_(device),
      planner_acts_(device),
      planner_(recipe_.model, 1, 1) {
  planner_.bind_params(params_);
  params_.allocate();
  planner_.bind_params(params_);
  planner_.layout_acts(planner_acts_);
  planner_acts_.allocate();
  planner_.layout_acts(planner_acts_);
  std::vector<CheckpointTensor> tensors;
  for (const ParamInfo& p : params_.list())
    tensors.push_back({"model/" + p.name, p.param.value, p.shape, 0});
  for (const auto& [name, tensor] : planner_.state_tensors())
    tensors.push_back({"model/" + name, tensor, tensor.shape, 0});
  LoadedCheckpoint loaded = load_checkpoint(dir_, tensors);
  params_.refresh_weights();
  step_ = loaded.step;
  auto phase = loaded.state.ints.find("moe_phase");
  const MoeConfig& moe = recipe_.model.moe;
  moe_phase_ = phase != loaded.state.ints.end() ? phase->second
               : moe.enabled()                  ? moe.num_phases() - 1
                                                : 0;
  tokenizer_spec_ = find_tokenizer(recipe_.data.tokenizer, dir_);
  tokenizer_ = make_tokenizer(tokenizer_spec_);
}

void TrainedModel::copy_state(const std::vector<std::pair<std::string, Tensor>>& into) {
  auto loaded = planner_.state_tensors();
  for (const auto& [name, tensor] : into)
    for (const auto& [have, value] : loaded)
      if (name == have) ops::convert(tensor, value);
}

LoadedDecoder::LoadedDecoder(TrainedModel& model, int64_t capacity, int64_t chunk)
    : arena(model.device()), decoder(model.config(), capacity, chunk) {
  decoder.bind_params(model.params());
  decoder.layout(arena);
  arena.allocate();
  decoder.layout(arena);
  model.restore_state(decoder);
}

Device inference_device(const std::string& choice) {
  if (choice == "cpu") return Device::kCpu;
  if (choice == "auto") return device::cuda_available() ? Device::kCuda : Device::kCpu;
  if (choice != "cuda") fail("--device {}: allowed: auto, cpu, cuda", choice);
  if (!device::cuda_available()) fail("--device cuda: {}", device::describe());
  return Device::kCuda;
}

}  // namespace sigma
