// Test-only fault injection, driven by the SIGMA_FAULTS environment variable, so the test
// suite can show that a run survives what long runs meet: a kill at a chosen instant
// (inside a checkpoint write too), a stall there, a non-finite or spiking loss.
//
//   SIGMA_FAULTS="kill@checkpoint.rank_file.tensor#3,nan_loss@7x3,loss_spike@12"
//
// A comma-separated list of items:
//   kill@POINT[#K]       SIGKILL this process at the K-th pass through POINT (K = 1)
//   pause@POINT[#K]      sleep kPauseSeconds there (a window for a test to send a signal)
//   KIND@STEP[xN]        the first N attempts of optimizer step STEP (N = 1) see fault KIND:
//                        nan_loss, nan_grad (a NaN loss or gradient norm), loss_spike,
//                        grad_spike (the value times kSpikeFactor)
// POINT names are the fault::point() calls in the code (`grep -rn 'fault::point' core`).
// Unset or empty means no fault, and each call costs one branch. A malformed value is a
// UserError naming the item. Never set outside tests: a fault really happens.
#pragma once

#include <cstdint>
#include <string_view>

namespace sigma::fault {

inline constexpr double kSpikeFactor = 100.0;
inline constexpr int kPauseSeconds = 3;

// A named place in the code where SIGMA_FAULTS may kill or pause the process.
void point(std::string_view name);

// Whether fault `kind` (nan_loss, nan_grad, loss_spike, grad_spike) hits this attempt of
// optimizer step `step`; counts the attempt.
bool hits(std::string_view kind, int64_t step);

}  // namespace sigma::fault
