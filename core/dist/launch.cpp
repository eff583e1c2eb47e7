// Reading the launcher's environment (the table of variables is in launch.h).
#include "core/dist/launch.h"

#include "core/error.h"

#include <fmt/format.h>

#include <charconv>
#include <cstdlib>
#include <cstring>

namespace sigma {
namespace {

// The variable's value as an integer >= min; absent gives `fallback`.
int read_int(const GetEnv& getenv, const char* name, int min, int fallback) {
  const char* text = getenv(name);
  if (!text) return fallback;
  int value = 0;
  const char* end = text + std::strlen(text);
  auto [rest, error] = std::from_chars(text, end, value);
  if (error != std::errc() || rest != end || value < min)
    fail("environment variable {}={}: expected an integer >= {}", name, text, min);
  return value;
}

struct Names {
  const char* rank;
  const char* size;
  const char* local_rank;
  const char* local_size;
};

Launch read_ranks(const GetEnv& getenv, Launcher launcher, const Names& names, std::string source) {
  Launch launch;
  launch.launcher = launcher;
  launch.source = std::move(source);
  launch.world_size = read_int(getenv, names.size, 1, 1);
  launch.rank = read_int(getenv, names.rank, 0, 0);
  if (launch.rank >= launch.world_size)
    fail("environment variable {}={} is not below {}={}", names.rank, launch.rank, names.size,
         launch.world_size);
  launch.local_rank = names.local_rank ? read_int(getenv, names.local_rank, 0, 0) : 0;
  launch.local_size = names.local_size ? read_int(getenv, names.local_size, 1, 1) : 1;
  return launch;
}

}  // namespace

std::string Launch::describe() const {
  switch (launcher) {
    case Launcher::kNone:
      return "one process (no launcher)";
    case Launcher::kMpi:
      return fmt::format("rank {} of {} (MPI launch: {})", rank, world_size, source);
    case Launcher::kEnv:
      return fmt::format("rank {} of {} ({}, rendezvous {}:{})", rank, world_size, source,
                         master_addr, master_port);
  }
  return "";
}

Launch detect_launch(const GetEnv& getenv) {
  if (getenv("OMPI_COMM_WORLD_SIZE"))
    return read_ranks(getenv, Launcher::kMpi,
                      {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
                       "OMPI_COMM_WORLD_LOCAL_SIZE"},
                      "OMPI_COMM_WORLD_*");
  if (getenv("PMI_SIZE"))
    return read_ranks(getenv, Launcher::kMpi,
                      {"PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS"}, "PMI_*");
  bool torchrun = getenv("WORLD_SIZE") != nullptr;
  bool slurm = getenv("SLURM_NTASKS") != nullptr && getenv("SLURM_PROCID") != nullptr;
  if (slurm && !torchrun && !getenv("MASTER_ADDR"))
    return read_ranks(getenv, Launcher::kMpi,
                      {"SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", nullptr}, "SLURM_*");
  if (!torchrun && !slurm) return Launch{};
  Launch launch = torchrun ? read_ranks(getenv, Launcher::kEnv,
                                        {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"},
                                        "RANK/WORLD_SIZE")
                           : read_ranks(getenv, Launcher::kEnv,
                                        {"SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", nullptr},
                                        "SLURM_PROCID/SLURM_NTASKS");
  if (launch.world_size == 1) return Launch{};
  const char* addr = getenv("MASTER_ADDR");
  if (!addr || !*addr)
    fail(
        "{} give {} ranks but MASTER_ADDR is not set: the ranks meet at "
        "MASTER_ADDR:MASTER_PORT (rank 0's host and a free port)",
        launch.source, launch.world_size);
  launch.master_addr = addr;
  launch.master_port = read_int(getenv, "MASTER_PORT", 1, 29500);
  if (launch.master_port > 65535)
    fail("environment variable MASTER_PORT={}: not a port", launch.master_port);
  return launch;
}

Launch detect_launch() {
  return detect_launch([](const char* name) { return std::getenv(name); });
}

int launched_rank() {
  try {
    return detect_launch().rank;
  } catch (const UserError&) {
    return 0;
  }
}

std::string rank_prefix() {
  try {
    Launch launch = detect_launch();
    return launch.world_size > 1 ? fmt::format("rank {}: ", launch.rank) : "";
  } catch (const UserError&) {
    return "";
  }
}

}  // namespace sigma
