// LR schedules and the batch-size ramp.
#include "core/optim/lr_schedule.h"
#include "core/train/batch_schedule.h"

#include <doctest/doctest.h>

using namespace sigma;

TEST_CASE("lr: warmup is linear and cosine ends at the floor") {
  LrSchedulerConfig c;
  c.kind = LrSchedule::kCosine;
  c.warmup_steps = 10;
  c.min_lr_ratio = 0.1;
  CHECK(lr_at(c, 1.0, 0, 110) == doctest::Approx(0.1));
  CHECK(lr_at(c, 1.0, 9, 110) == doctest::Approx(1.0));
  CHECK(lr_at(c, 1.0, 10, 110) == doctest::Approx(1.0));
  CHECK(lr_at(c, 1.0, 60, 110) == doctest::Approx(0.55));
  CHECK(lr_at(c, 1.0, 110, 110) == doctest::Approx(0.1));
}

TEST_CASE("lr: warmup-stable-decay holds the peak, then decays over the last fraction") {
  LrSchedulerConfig c;
  c.kind = LrSchedule::kWsd;
  c.warmup_steps = 0;
  c.decay_fraction = 0.2;
  c.min_lr_ratio = 0.0;
  c.decay_shape = LrShape::kLinear;
  CHECK(lr_at(c, 2.0, 79, 100) == doctest::Approx(2.0));
  CHECK(lr_at(c, 2.0, 90, 100) == doctest::Approx(1.0));
  CHECK(lr_at(c, 2.0, 100, 100) == doctest::Approx(0.0));
}

TEST_CASE("lr: phases follow Sigma's peak / 20% / anneal shape") {
  LrSchedulerConfig c;
  c.kind = LrSchedule::kPhases;
  c.warmup_steps = 0;
  c.phases = {{0.5, 1.0, 1.0, LrShape::kConstant},
              {0.25, 0.2, 0.2, LrShape::kConstant},
              {0.25, 0.2, 0.0, LrShape::kLinear}};
  CHECK(lr_at(c, 1.0, 10, 100) == doctest::Approx(1.0));
  CHECK(lr_at(c, 1.0, 60, 100) == doctest::Approx(0.2));
  CHECK(lr_at(c, 1.0, 87, 100) == doctest::Approx(0.2 * (1 - 12.0 / 25)));
  CHECK(lr_at(c, 1.0, 100, 100) == doctest::Approx(0.0));
}

TEST_CASE("batch: the ramp grows in whole micro-batches and reaches the target") {
  TrainConfig t;
  t.micro_batch = 2;
  t.global_batch_tokens = 8 * 2 * 16;  // 8 micro-batches of 2 x 16 tokens
  t.batch_ramp_start_tokens = 2 * 2 * 16;
  t.batch_ramp_tokens = 10000;
  t.tokens = 100000;
  BatchSchedule s(t, 16);
  CHECK(s.micro_batches_at(0) == 2);
  CHECK(s.micro_batches_at(5000) == 5);
  CHECK(s.micro_batches_at(10000) == 8);
  // Steps: walk the ramp, then whole steps of 256 tokens; check by simulation.
  int64_t consumed = 0, steps = 0;
  while (consumed < t.tokens) consumed += s.micro_batches_at(consumed) * 32, ++steps;
  CHECK(s.total_steps() == steps);
}
