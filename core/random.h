// Rng: a portable, seedable generator. std::normal_distribution and friends are
// implementation-defined, so runs would differ between standard libraries; this one is
// specified here (splitmix64 seeding, xoshiro256** stream, Box-Muller normals).
#pragma once

#include <cstdint>
#include <string_view>

namespace sigma {

class Rng {
 public:
  explicit Rng(uint64_t seed);
  uint64_t next_u64();
  double uniform();                   // [0, 1)
  uint64_t below(uint64_t bound);     // [0, bound), unbiased
  double normal();                    // standard normal

 private:
  uint64_t s_[4];
  bool has_spare_ = false;
  double spare_ = 0;
};

// A seed for a named stream: the same (seed, name) always gives the same stream.
uint64_t seed_for(uint64_t seed, std::string_view name);

}  // namespace sigma
