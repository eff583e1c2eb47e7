// The rendezvous of a torchrun-style launch: rank 0 hands every other rank a few bytes (the
// NCCL unique id) over TCP at MASTER_ADDR:MASTER_PORT.
#pragma once

#include "core/dist/launch.h"

#include <string>

namespace sigma {

// Rank 0 listens on MASTER_PORT and sends `payload` to each rank that connects; the others
// connect to MASTER_ADDR:MASTER_PORT (retrying while rank 0 starts) and return what it
// sent. Gives up after `timeout_s` with a UserError naming the address.
std::string rendezvous_over_tcp(const Launch& launch, const std::string& payload, double timeout_s);

}  // namespace sigma
