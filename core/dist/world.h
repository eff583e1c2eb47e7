// World: the process groups of a run, made from the launcher's environment and checked
// against the recipe's [parallelism] layout.
//
// With W launched ranks, dp = W (data parallel over every rank) and, for MoE, ep divides
// dp: ranks [g*ep, (g+1)*ep) form expert-parallel group g, which splits each MoE layer's
// experts (EP inside DP); ranks with the same rank % ep hold the same experts and form an
// expert-data-parallel group of dp/ep ranks, over which those experts' gradients are
// reduced. Dense parameters are reduced over the whole world.
//
// CPU runs communicate over MPI (launch with mpirun or srun); CUDA runs over NCCL, whose
// communicator is bootstrapped over MPI or, with torchrun-style variables, over TCP at
// MASTER_ADDR:MASTER_PORT (core/dist/README.md).
#pragma once

#include "core/dist/launch.h"
#include "core/dist/process_group.h"
#include "core/dist/watchdog.h"

#include <memory>
#include <string>

namespace sigma {

struct ParallelismConfig;

struct World {
  Launch launch;
  int64_t dp = 1;  // resolved: the world size
  int64_t ep = 1;
  // Destroyed in reverse order: subgroups, then the world, then MPI under NCCL, then the
  // watchdog, which times them all.
  std::unique_ptr<Watchdog> watchdog;
  std::unique_ptr<ProcessGroup> bootstrap;  // the MPI world under a NCCL one, else null
  std::unique_ptr<ProcessGroup> world;
  std::unique_ptr<ProcessGroup> ep_group;         // ep > 1 only
  std::unique_ptr<ProcessGroup> expert_dp_group;  // ep > 1 only

  int rank() const { return world->rank(); }
  int size() const { return world->size(); }
  bool leader() const { return world->rank() == 0; }
};

// Reads the launch, starts the watchdog (heartbeats in RUN_DIR/heartbeat when several ranks
// run), makes the groups for tensors on `device` and checks dp and ep against the world.
// Layout mistakes throw EveryRankError (one line, printed by rank 0).
World start_world(const ParallelismConfig& config, Device device, const std::string& run_dir);

// The world size is known before any communication; these checks need no group. Exposed
// for tests: fails like start_world does.
int64_t check_layout(const ParallelismConfig& config, const Launch& launch);

}  // namespace sigma
