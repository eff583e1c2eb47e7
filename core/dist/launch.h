// How this process was launched, read from the launcher's environment before any
// communication: rank, world size, rank on this node, and where the rendezvous is.
//
//   mpirun (OpenMPI)   OMPI_COMM_WORLD_{RANK,SIZE,LOCAL_RANK,LOCAL_SIZE}
//   mpiexec (MPICH)    PMI_RANK, PMI_SIZE, MPI_LOCALRANKID, MPI_LOCALNRANKS
//   srun               SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID (through MPI's PMI, unless
//                      MASTER_ADDR is set, which makes it a torchrun-style launch)
//   torchrun-style     RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT
//   none of these      one process
// An MPI launch gets an MPI world (CPU tensors over MPI; NCCL bootstrapped over MPI); a
// torchrun-style one a NCCL world bootstrapped over TCP at MASTER_ADDR:MASTER_PORT.
#pragma once

#include <functional>
#include <string>

namespace sigma {

enum class Launcher { kNone, kMpi, kEnv };

struct Launch {
  Launcher launcher = Launcher::kNone;
  std::string source;  // the variables it came from, for messages: "OMPI_COMM_WORLD_*"
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  int local_size = 1;
  std::string master_addr;  // torchrun-style only
  int master_port = 0;

  std::string describe() const;  // "rank 1 of 4 (mpirun: OMPI_COMM_WORLD_*)"
};

using GetEnv = std::function<const char*(const char*)>;

// Reads the launcher's variables. A malformed one (WORLD_SIZE=abc, RANK >= WORLD_SIZE, a
// torchrun-style world without MASTER_ADDR) is a UserError naming the variable.
Launch detect_launch(const GetEnv& getenv);
Launch detect_launch();  // from this process's environment

// This process's rank as the launcher says, 0 when there is none or it cannot be read:
// for error messages, which must work before (and whatever) detect_launch says.
int launched_rank();
// "rank 3: " in a multi-rank launch, "" otherwise: the start of a rank's own error line.
std::string rank_prefix();

}  // namespace sigma
