// The numerical guards (non-finite and spiking steps, rollback counting, statistics through a
// checkpoint), the early warnings (per-layer norms, the MoE depth dip, idle experts) and the
// SIGMA_FAULTS grammar.
#include "core/error.h"
#include "core/train/early_warnings.h"
#include "core/train/guard.h"
#include "core/train/run_log.h"
#include "test/tiny_model.h"
#include "temp_dir.h"

#include <doctest/doctest.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

using namespace sigma;
namespace fs = std::filesystem;

namespace {

// A run directory of its own, with the rows RunLog wrote to metrics.jsonl.
struct LogDir {
  test::TempDir dir;
  std::optional<RunLog> log;  // declared after dir: its files close before dir is removed
  explicit LogDir(const char* name) : dir(name) { log.emplace(dir.str(), -1); }
  std::vector<nlohmann::json> events() const {
    std::vector<nlohmann::json> rows;
    std::ifstream in(dir.path / "metrics.jsonl");
    for (std::string line; std::getline(in, line);) {
      nlohmann::json row = nlohmann::json::parse(line);
      if (row.contains("event")) rows.push_back(row);
    }
    return rows;
  }
};

// A loss curve with a little deterministic noise around `level`.
double noisy(double level, int64_t i) { return level + 0.02 * std::sin(double(i) * 1.7); }

}  // namespace

TEST_CASE("guard: a non-finite loss or gradient norm skips the step and is logged") {
  LogDir dir("guard_nan");
  GuardConfig config;
  Guard guard(config);
  CHECK(guard.admit(1, 3.0, 1.0, *dir.log));
  CHECK_FALSE(guard.admit(2, std::nan(""), 1.0, *dir.log));
  CHECK_FALSE(guard.admit(2, 3.0, INFINITY, *dir.log));
  CHECK(guard.skipped_in_a_row() == 2);
  CHECK(guard.admit(2, 3.0, 1.0, *dir.log));
  CHECK(guard.skipped_in_a_row() == 0);
  std::vector<nlohmann::json> events = dir.events();
  REQUIRE(events.size() == 2);
  CHECK(events[0]["event"] == "guard.skip");
  CHECK(events[0]["reason"] == "nan_loss");
  CHECK(events[0]["step"] == 2);
  CHECK(events[0]["guard.loss"].is_null());  // NaN has no JSON spelling
  CHECK(events[1]["reason"] == "nan_grad_norm");
}

TEST_CASE("guard: a spike is skipped once the window is full and never enters the statistics") {
  LogDir dir("guard_spike");
  GuardConfig config;
  config.window = 10;
  config.loss_z = 6;
  config.grad_norm_z = 6;
  Guard guard(config);
  // Before the window is full nothing is judged a spike, however large.
  CHECK(guard.admit(1, 8.0, 1.0, *dir.log));
  for (int64_t i = 2; i <= 60; ++i) CHECK(guard.admit(i, noisy(3.0, i), noisy(1.0, i), *dir.log));
  CHECK_FALSE(guard.admit(61, 4.0, 1.0, *dir.log));  // far above a ~3.0 +- 0.03 curve
  CHECK_FALSE(guard.admit(61, 3.0, 9.0, *dir.log));  // gradient norm spike
  CHECK(guard.admit(61, 3.01, 1.0, *dir.log));       // within the noise
  CHECK_FALSE(guard.admit(62, 4.0, 1.0, *dir.log));  // still a spike: 4.0 was not learnt
  CHECK(guard.admit(62, 2.0, 1.0, *dir.log));        // falling is never a spike
  std::vector<nlohmann::json> events = dir.events();
  REQUIRE(events.size() == 3);
  CHECK(events[0]["reason"] == "loss_spike");
  CHECK(events[0]["guard.z"].get<double>() > 6);
  CHECK(events[1]["reason"] == "grad_norm_spike");

  // A zero threshold turns a check off.
  config.loss_z = 0;
  Guard off(config);
  for (int64_t i = 1; i <= 40; ++i) off.admit(i, noisy(3.0, i), 1.0, *dir.log);
  CHECK(off.admit(41, 30.0, 1.0, *dir.log));
}

TEST_CASE("guard: rollback after rollback_after skips in a row, until max_rollbacks") {
  LogDir dir("guard_rollback");
  GuardConfig config;
  config.rollback_after = 2;
  config.max_rollbacks = 1;
  Guard guard(config);
  guard.admit(1, 3.0, 1.0, *dir.log);
  CHECK_FALSE(guard.admit(2, NAN, 1.0, *dir.log));
  CHECK_FALSE(guard.wants_rollback());
  CHECK_FALSE(guard.admit(2, NAN, 1.0, *dir.log));
  CHECK(guard.wants_rollback());
  guard.roll_back(2, "ckpt/step_00000001", 1, 16, *dir.log);
  CHECK_FALSE(guard.wants_rollback());
  std::vector<nlohmann::json> events = dir.events();
  CHECK(events.back()["event"] == "guard.rollback");
  CHECK(events.back()["to_step"] == 1);
  CHECK(events.back()["skipped_samples"] == 16);
  guard.admit(2, NAN, 1.0, *dir.log);
  guard.admit(2, NAN, 1.0, *dir.log);
  CHECK_THROWS_WITH_AS(guard.roll_back(2, "ckpt/step_00000001", 1, 8, *dir.log),
                       doctest::Contains("guard.max_rollbacks = 1 rollbacks are used up"),
                       UserError);

  config.rollback_after = 0;  // never
  Guard never(config);
  for (int i = 0; i < 10; ++i) never.admit(1, NAN, 1.0, *dir.log);
  CHECK_FALSE(never.wants_rollback());
}

TEST_CASE("guard: the statistics travel in a checkpoint and give the same decisions") {
  LogDir dir("guard_state");
  GuardConfig config;
  config.window = 5;
  Guard first(config), resumed(config), fresh(config);
  for (int64_t i = 1; i <= 20; ++i) first.admit(i, noisy(3.0, i), noisy(1.0, i), *dir.log);
  CheckpointState state;
  first.save(state);
  resumed.restore(state);
  fresh.restore(CheckpointState{});
  // 3.5 is a spike against the history, and not to a guard that has seen nothing.
  CHECK_FALSE(first.admit(21, 3.5, 1.0, *dir.log));
  CHECK_FALSE(resumed.admit(21, 3.5, 1.0, *dir.log));
  CHECK(fresh.admit(21, 3.5, 1.0, *dir.log));
  CheckpointState again;
  resumed.save(again);
  CHECK(again.floats == state.floats);
  CHECK(again.ints == state.ints);
}

namespace {

// Four MoE layers with an expert bias (which steers the selection), random tokens.
ModelConfig four_moe_layers() {
  ModelConfig c;
  c.n_layers = 4;
  c.d_model = 16;
  c.d_ff = 24;
  c.vocab_size = 11;
  c.attention = {4, 2, 2, 4, 4, 0, true};
  c.moe.n_experts = 4;
  c.moe.d_expert = 8;
  c.moe.top_k = {1};
  c.moe.bias_update_rate = 1e-3;
  return c;
}

void scale_layer(ParameterSet& params, int64_t layer, float factor) {
  std::string prefix = fmt::format("model.layers.{}.", layer);
  for (const ParamInfo& p : params.list())
    if (p.name.starts_with(prefix))
      for (int64_t i = 0; i < p.shape.numel(); ++i) p.param.value.f32()[i] *= factor;
}

}  // namespace

TEST_CASE("guard: early warnings log per-layer norms and warn of a middle-layer dip once") {
  LogDir dir("guard_dip");
  ModelConfig config = four_moe_layers();
  test::TinyModel m(config);
  GuardConfig guard;
  guard.norm_dip = 0.1;
  EarlyWarnings warnings(guard, 1, m.model, m.params);
  for (int64_t l = 0; l < 4; ++l) m.model.moe_layer(l)->reset_step_stats();
  m.model.forward();
  warnings.observe_experts(1, *dir.log);  // one step of expert load, due at once
  // A healthy profile: the norm rises with depth.
  for (int64_t l = 0; l < 4; ++l) scale_layer(m.params, l, 1.0f + 0.2f * float(l));
  nlohmann::json row;
  warnings.log_layers(1, row, *dir.log);
  for (int64_t l = 0; l < 4; ++l) {
    CHECK(row[fmt::format("layers.l{}.param_norm", l)].get<double>() > 0);
    CHECK(row.contains(fmt::format("layers.l{}.grad_norm", l)));
    std::vector<int64_t> load = row[fmt::format("moe.l{}.tokens_per_expert", l)];
    CHECK(load == m.model.moe_layer(l)->step_stats().counts);
  }
  CHECK(row["moe.norm_dip"].get<double>() == 0);
  CHECK(dir.events().empty());
  // Layer 2 shrinks to half: a dip of about 50% between layers 1 and 3.
  scale_layer(m.params, 2, 0.5f);
  row = {};
  warnings.log_layers(2, row, *dir.log);
  CHECK(!row.contains("moe.l1.tokens_per_expert"));  // no step observed since the last row
  warnings.log_layers(3, row, *dir.log);             // still dipped: no second warning
  CHECK(row["moe.norm_dip"].get<double>() > 0.3);
  std::vector<nlohmann::json> events = dir.events();
  REQUIRE(events.size() == 1);
  CHECK(events[0]["event"] == "warning.norm_dip");
  CHECK(events[0]["layer"] == 2);
}

TEST_CASE("guard: an expert idle for idle_expert_steps steps is warned about once") {
  LogDir dir("guard_idle");
  ModelConfig config = four_moe_layers();
  test::TinyModel m(config);
  GuardConfig guard;
  guard.idle_expert_steps = 3;
  EarlyWarnings warnings(guard, 0, m.model, m.params);
  m.model.moe_layer(1)->bias().f32()[2] = -1e6f;  // layer 1 never picks expert 2
  for (int64_t step = 1; step <= 5; ++step) {
    for (int64_t l = 0; l < 4; ++l) m.model.moe_layer(l)->reset_step_stats();
    m.model.forward();
    warnings.observe_experts(step, *dir.log);
  }
  std::vector<nlohmann::json> events = dir.events();
  REQUIRE(events.size() >= 1);
  bool found = false;
  for (const nlohmann::json& e : events) {
    CHECK(e["event"] == "warning.idle_experts");
    if (e["layer"] == 1) {
      found = true;
      CHECK(e["step"] == 3);
      CHECK(e["experts"].get<std::vector<int64_t>>() == std::vector<int64_t>{2});
    }
  }
  CHECK(found);
}
