// The MPI process group: collectives on CPU tensors between the processes mpirun or srun
// started (OpenMPI from Debian in CI).
//
// Every MPI call of the process runs on one communication thread, in the order the main
// thread asked for them (MPI_THREAD_SERIALIZED is all we need): a reduce-scatter started by
// reduce_scatter_async proceeds there while the main thread goes on with backward, and the
// blocking calls queue behind it. A blocking wait is timed by the Watchdog. MPI errors
// return (MPI_ERRORS_RETURN) and become one-line UserErrors; the job then ends through the
// launcher, which stops every rank when one exits non-zero.
// Leaves out: MPI's own fault tolerance (ULFM); a failure ends the job (scripts/supervise).
#pragma once

#include "core/dist/process_group.h"

namespace sigma {

class Watchdog;

// Initialises MPI (on the communication thread) and returns MPI_COMM_WORLD as a group.
// MPI is finalised when this group is destroyed normally; when it is destroyed while an
// exception unwinds (some rank failed), MPI is left as it is, since finalising would wait
// for ranks that will never arrive.
std::unique_ptr<ProcessGroup> make_mpi_world(Watchdog* watchdog);

}  // namespace sigma
