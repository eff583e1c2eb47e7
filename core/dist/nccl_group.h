// The NCCL process group: collectives on CUDA tensors between ranks that each drive one GPU
// (LOCAL_RANK picks it). Built with the CUDA backend when NCCL is found (SIGMA_NCCL).
//
// Tensor collectives run on the compute stream, ordered with the kernels around them, except
// reduce_scatter_async, which runs on a side stream after an event on the compute stream:
// the data-parallel gradient buckets reduce there while backward's kernels go on (Work::wait
// makes the compute stream wait for it, and blocks the host until it is done, under the
// watchdog). Host collectives copy through a small device buffer and block, timed by the
// watchdog. Uneven parts (reduce-scatter, all-gather) are grouped ncclReduce/ncclBroadcast
// calls, one per rank, as NCCL's own collectives need equal parts.
// Leaves out: NCCL's non-blocking init and its own timeouts (the watchdog ends a stuck
// rank instead), user buffer registration, and NVLink SHARP.
#pragma once

#include "core/dist/launch.h"
#include "core/dist/process_group.h"

namespace sigma {

class Watchdog;

// Binds this process to GPU local_rank % (GPUs on the node), makes the NCCL unique id on
// rank 0 and shares it over `mpi` (an MPI launch) or over TCP at MASTER_ADDR:MASTER_PORT
// (torchrun-style; mpi is null), then joins the communicator.
std::unique_ptr<ProcessGroup> make_nccl_world(const Launch& launch, ProcessGroup* mpi,
                                              Watchdog* watchdog, double timeout_s);

}  // namespace sigma
