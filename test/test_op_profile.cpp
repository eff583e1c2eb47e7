// The op profile (kernels/op_profile.h): ops are timed by name and shape, only while it
// records, and take() forgets what it returned.
#include "kernels/op_profile.h"
#include "kernels/ops.h"
#include "cuda_parity.h"

#include <doctest/doctest.h>

#include <vector>

namespace sigma {

TEST_CASE("op profile: counts each op by name and shape while recording, and only then") {
  std::vector<float> a(12, 1.0f), b(12, 2.0f), c(8, 3.0f);
  Tensor x = test::cpu_view(a, {3, 4}), y = test::cpu_view(b, {3, 4}), z = test::cpu_view(c, {8});
  ops::add(x, x, y);  // not recording: not counted
  op_profile::start();
  ops::add(x, x, y);
  ops::add(x, x, y);
  ops::scale(z, 0.5f);
  op_profile::stop();
  ops::scale(z, 0.5f);
  std::vector<op_profile::Row> rows = op_profile::take();
  REQUIRE(rows.size() == 2);
  for (const op_profile::Row& row : rows) {
    CHECK(row.ms >= 0);
    if (row.op == "add") {
      CHECK(row.shapes == "[3, 4] [3, 4]");
      CHECK(row.calls == 2);
    } else {
      CHECK(row.op == "scale");
      CHECK(row.shapes == "[8]");
      CHECK(row.calls == 1);
    }
  }
  CHECK(op_profile::take().empty());
}

}  // namespace sigma
