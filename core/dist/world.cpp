// Making a run's process groups from the launch (world.h).
#include "core/dist/world.h"

#include "core/dist/config.h"
#include "core/dist/mpi_group.h"
#include "core/dist/single_group.h"
#if SIGMA_NCCL
#include "core/dist/nccl_group.h"
#endif

#include <fmt/format.h>

#include <filesystem>

namespace sigma {

int64_t check_layout(const ParallelismConfig& config, const Launch& launch) {
  int64_t world = launch.world_size;
  int64_t dp = config.dp == 0 ? world : config.dp;
  if (dp != world)
    throw EveryRankError(
        fmt::format("parallelism.dp = {} but {} rank{} {} launched{}; allowed: dp = {} or 0 (every "
                    "launched rank)",
                    config.dp, world, world == 1 ? "" : "s", world == 1 ? "was" : "were",
                    launch.source.empty() ? "" : " (" + launch.source + ")", world));
  if (dp % config.ep != 0)
    throw EveryRankError(fmt::format(
        "parallelism.ep = {} does not divide the {} data-parallel ranks; allowed: a divisor of "
        "{}",
        config.ep, dp, dp));
  return dp;
}

World start_world(const ParallelismConfig& config, Device device, const std::string& run_dir) {
  World w;
  w.launch = detect_launch();
  w.dp = check_layout(config, w.launch);
  w.ep = config.ep;
  WatchdogConfig watch{w.launch.rank, w.launch.world_size, "", config.collective_timeout_s,
                       config.progress_timeout_s};
  if (w.launch.world_size > 1)
    watch.heartbeat_dir = (std::filesystem::path(run_dir) / "heartbeat").string();
  w.watchdog = std::make_unique<Watchdog>(watch);
  Watchdog* watchdog = w.watchdog.get();

  if (w.launch.world_size == 1) {
    w.world = std::make_unique<SingleGroup>(device);
  } else if (device == Device::kCpu) {
    if (w.launch.launcher != Launcher::kMpi)
      throw EveryRankError(
          fmt::format("{}: CPU ranks communicate over MPI; launch them with mpirun or srun, not "
                      "torchrun-style variables (those are for NCCL on GPUs)",
                      w.launch.describe()));
    w.world = make_mpi_world(watchdog);
  } else {
#if SIGMA_NCCL
    if (w.launch.launcher == Launcher::kMpi) w.bootstrap = make_mpi_world(watchdog);
    w.world = make_nccl_world(w.launch, w.bootstrap.get(), watchdog, config.collective_timeout_s);
#else
    fail(
        "multi-rank CUDA training needs NCCL; this sigma was built without it (NCCL comes "
        "with the CUDA toolkit: configure with it installed)");
#endif
  }
  SIGMA_CHECK(w.world->size() == w.launch.world_size && w.world->rank() == w.launch.rank,
              "the launcher says rank {} of {}, the communicator {} of {}", w.launch.rank,
              w.launch.world_size, w.world->rank(), w.world->size());
  if (w.ep > 1) {
    int rank = w.world->rank();
    w.ep_group = w.world->split(int(rank / w.ep), rank, "ep");
    w.expert_dp_group = w.world->split(int(rank % w.ep), rank, "expert-dp");
  }
  return w;
}

}  // namespace sigma
