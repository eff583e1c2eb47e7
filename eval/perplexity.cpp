#include "eval/perplexity.h"

#include "core/data/loader.h"
#include "kernels/device.h"

#include <fmt/format.h>

#include <cmath>
#include <filesystem>

namespace sigma {

std::vector<MetricResult> evaluate_perplexity(TrainedModel& model, const std::string& data_prefix,
                                              int64_t limit) {
  const Recipe& recipe = model.recipe();
  DataConfig data = recipe.data;
  Split split = Split::kValid;
  std::string task = "validation split";
  if (!data_prefix.empty()) {
    for (const char* ext : {".bin", ".idx"})
      if (!std::filesystem::exists(data_prefix + ext))
        fail("--data {}: no {}{} (a Megatron dataset prefix, as `sigma data prepare` writes)",
             data_prefix, data_prefix, ext);
    data.sources = {{data_prefix, 1.0}};
    data.valid_fraction = 0;
    data.shuffle = false;
    split = Split::kTrain;  // with nothing held out, the "training" side is every document
    task = std::filesystem::path(data_prefix).filename().string();
  } else if (data.valid_fraction <= 0 || data.sources.empty()) {
    fail(
        "{}: the run's recipe holds out no validation documents (data.valid_fraction = {}); "
        "pass --data PREFIX",
        model.checkpoint_dir(), data.valid_fraction);
  }
  DataLoader loader(data, split, recipe.run.seed);
  int64_t batch = recipe.train.micro_batch, seq_len = data.seq_len;
  int64_t samples = loader.samples_per_epoch();
  if (limit > 0) samples = std::min(samples, limit);
  if (samples < 1) fail("{}: fewer tokens than one sequence of {} + 1", task, seq_len);
  batch = std::min(batch, samples);

  Arena acts(model.device());
  Transformer full(model.config(), batch, seq_len);
  model.params().rebind();
  full.bind_params(model.params());
  full.layout_acts(acts);
  acts.allocate();
  full.layout_acts(acts);
  model.restore_state(full);

  // The loader fills host memory; the model reads its inputs wherever it runs.
  int64_t n = batch * seq_len;
  Buffer host(2 * size_t(n) * sizeof(int32_t), Device::kCpu);
  Tensor tokens_N = host.tensor(0, {n}, DType::kI32);
  Tensor targets_N = host.tensor(tokens_N.bytes(), {n}, DType::kI32);
  double loss_sum = 0;
  int64_t tokens = 0, bytes = 0;
  for (int64_t done = 0; done + batch <= samples; done += batch) {
    loader.next(batch, tokens_N.i32(), targets_N.i32());
    device::copy(full.tokens(), tokens_N);
    device::copy(full.targets(), targets_N);
    loss_sum += full.forward();
    tokens += n;
    std::vector<int32_t> ids(targets_N.i32(), targets_N.i32() + n);
    bytes += int64_t(model.tokenizer().decode(ids).size());
  }
  double loss = loss_sum / double(tokens);
  return {{task, "loss", loss, tokens},
          {task, "perplexity", std::exp(loss), tokens},
          {task, "bits_per_byte", loss_sum / std::log(2.0) / double(std::max<int64_t>(bytes, 1)),
           tokens}};
}

}  // namespace sigma
