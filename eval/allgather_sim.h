// The Optiflow judge (SIGMA-FAMILY.md section 4): all-gather plans read out of generated
// Python *as text* (the code is never run) and timed by a simulator over the item's latency
// and bandwidth matrices.
//
// All-gather: GPU i starts with chunk i (chunk_bytes each); every GPU must end with all n
// chunks. A plan is a list of steps; a step is a list of (src, dst, chunk) transfers that run
// at the same time. A transfer is legal when src != dst and src holds the chunk when the
// step starts. Time model: within a step, the transfers on one directed link (src, dst) share
// it, so the link is busy latency[src][dst] + k * chunk_bytes / bandwidth[src][dst] for its k
// transfers; a step lasts as long as its busiest link; the plan's time is the sum of its
// steps. (An alpha-beta model per link, the usual first-order model of collectives.)
//
// In the code the plan is a Python literal assigned to `plan`:
//   plan = [[(0, 1, 0), (1, 2, 1)], [(0, 2, 0)], ...]   (tuples or lists, ints only)
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace sigma {

struct Topology {
  int64_t gpus = 0;
  std::vector<std::vector<double>> latency_us, bandwidth_gbps;  // [gpus][gpus]
  double chunk_bytes = 0;
};

struct Transfer {
  int64_t src = 0, dst = 0, chunk = 0;
};
using Plan = std::vector<std::vector<Transfer>>;

// The plan assigned to `plan` in `code`, or nullopt (with `error`) when there is none or it is
// not a list of steps of 3-int transfers.
std::optional<Plan> parse_plan(const std::string& code, std::string* error);

// Python source of `plan` (what parse_plan reads back).
std::string plan_literal(const Plan& plan);

struct Simulation {
  bool valid = false;
  std::string error;  // why not valid
  double time_us = 0;
};
Simulation simulate(const Topology& topology, const Plan& plan);

// The ring all-gather (n - 1 steps, each GPU forwards to its successor): a valid baseline.
Plan ring_plan(int64_t gpus);

}  // namespace sigma
