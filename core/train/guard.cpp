// The numerical guards: judging a step, logging skips and rollbacks, the moving statistics.
#include "core/train/guard.h"

#include "core/error.h"
#include "core/fault.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace sigma {
namespace {

// The spread is at least this fraction of the mean: a flat curve has a tiny variance, and
// noise on it must not count as a spike.
constexpr double kMinRelativeSpread = 0.01;

std::string in_a_row(int64_t n) { return n == 1 ? "1 in a row" : fmt::format("{} in a row", n); }

}  // namespace

void Guard::Moving::add(double x, double alpha) {
  if (count++ == 0) {
    mean = x;
    return;
  }
  double delta = x - mean;
  mean += alpha * delta;
  variance = (1 - alpha) * (variance + alpha * delta * delta);
}

double Guard::Moving::z_score(double x) const {
  double spread = std::max({std::sqrt(variance), kMinRelativeSpread * std::fabs(mean),
                            std::numeric_limits<double>::min()});
  return (x - mean) / spread;
}

bool Guard::admit(int64_t step, double loss, double grad_norm, RunLog& log) {
  if (fault::hits("nan_loss", step)) loss = std::nan("");
  if (fault::hits("nan_grad", step)) grad_norm = std::nan("");
  if (fault::hits("loss_spike", step)) loss *= fault::kSpikeFactor;
  if (fault::hits("grad_spike", step)) grad_norm *= fault::kSpikeFactor;

  std::string reason, why;
  double z = 0;
  auto spike = [&](const Moving& moving, double x, double threshold) {
    if (threshold <= 0 || moving.count < config_.window) return false;
    z = moving.z_score(x);
    return z > threshold;
  };
  if (!std::isfinite(loss)) {
    reason = "nan_loss";
    why = fmt::format("loss is {}", loss);
  } else if (!std::isfinite(grad_norm)) {
    reason = "nan_grad_norm";
    why = fmt::format("gradient norm is {}", grad_norm);
  } else if (spike(loss_, loss, config_.loss_z)) {
    reason = "loss_spike";
    why = fmt::format("loss {:.4g} is {:.1f} sd above its moving mean {:.4g}", loss, z, loss_.mean);
  } else if (spike(grad_norm_, grad_norm, config_.grad_norm_z)) {
    reason = "grad_norm_spike";
    why = fmt::format("gradient norm {:.4g} is {:.1f} sd above its moving mean {:.4g}", grad_norm,
                      z, grad_norm_.mean);
  }
  if (reason.empty()) {
    double alpha = 2.0 / double(config_.window + 1);
    loss_.add(loss, alpha);
    grad_norm_.add(grad_norm, alpha);
    skipped_in_a_row_ = 0;
    return true;
  }
  skipped_in_a_row_ += 1;
  log.line(fmt::format("step {} | guard: {}; update skipped ({})", step, why,
                       in_a_row(skipped_in_a_row_)));
  nlohmann::json row = {
      {"step", step},       {"event", "guard.skip"},        {"reason", reason},
      {"guard.loss", loss}, {"guard.grad_norm", grad_norm}, {"guard.in_a_row", skipped_in_a_row_}};
  if (z != 0) row["guard.z"] = z;
  log.metrics(row);
  return false;
}

void Guard::roll_back(int64_t step, const std::string& dir, int64_t to_step,
                      int64_t skipped_samples, RunLog& log) {
  if (rollbacks_ >= config_.max_rollbacks)
    fail(
        "guard: {} steps skipped in a row at step {}, and guard.max_rollbacks = {} rollbacks "
        "are used up; the run keeps diverging (lower the learning rate, or check the data and "
        "the hardware)",
        skipped_in_a_row_, step, config_.max_rollbacks);
  rollbacks_ += 1;
  log.line(fmt::format(
      "step {} | guard: {} steps skipped in a row: rolling back to {} (step "
      "{}) and skipping the {} samples read since (rollback {} of at most {})",
      step, skipped_in_a_row_, dir, to_step, skipped_samples, rollbacks_, config_.max_rollbacks));
  log.metrics({{"step", step},
               {"event", "guard.rollback"},
               {"checkpoint", dir},
               {"to_step", to_step},
               {"skipped_samples", skipped_samples},
               {"rollbacks", rollbacks_}});
  skipped_in_a_row_ = 0;
}

void Guard::save(CheckpointState& state) const {
  state.ints["guard.applied_steps"] = loss_.count;
  state.floats["guard.loss_mean"] = loss_.mean;
  state.floats["guard.loss_variance"] = loss_.variance;
  state.floats["guard.grad_norm_mean"] = grad_norm_.mean;
  state.floats["guard.grad_norm_variance"] = grad_norm_.variance;
}

void Guard::restore(const CheckpointState& state) {
  loss_ = grad_norm_ = Moving{};
  skipped_in_a_row_ = 0;
  auto count = state.ints.find("guard.applied_steps");
  if (count == state.ints.end()) return;  // saved without guard state
  auto get = [&](const char* key) {
    auto it = state.floats.find(key);
    return it == state.floats.end() ? 0.0 : it->second;
  };
  loss_ = {get("guard.loss_mean"), get("guard.loss_variance"), count->second};
  grad_norm_ = {get("guard.grad_norm_mean"), get("guard.grad_norm_variance"), count->second};
}

}  // namespace sigma
