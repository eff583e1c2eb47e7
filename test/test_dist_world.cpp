// The process groups at work in whatever world this test process runs in: collectives
// against what one process computes, the expert-parallel MoE layer against the local one,
// and on a GPU the NCCL group with a data-parallel step against plain AdamW.
//
// Run alone (ctest) the world is one process and the collectives are copies. The
// integration test test/integration/dist_collectives.sh runs the "dist: world" cases under
// `mpirun -np 2` and `-np 4`; scripts/gpu-dist-check runs "dist: cuda" with one rank and
// with two torchrun-style ranks sharing a GPU.
#include "core/dist/launch.h"
#include "core/dist/mpi_group.h"
#include "core/dist/single_group.h"
#include "core/optim/adamw.h"
#include "core/train/data_parallel.h"
#include "kernels/ops.h"
#include "test/cuda_parity.h"
#include "test/tiny_model.h"
#if SIGMA_NCCL
#include "core/dist/nccl_group.h"
#endif

#include <doctest/doctest.h>
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <string>

using namespace sigma;

namespace {

// The world of this test process: MPI under mpirun, else one process. Made once (MPI can be
// initialised once) and finalised at exit.
ProcessGroup& test_world() {
  static std::unique_ptr<ProcessGroup> world = [] {
    Launch launch = detect_launch();
    if (launch.launcher == Launcher::kMpi && launch.world_size > 1) return make_mpi_world(nullptr);
    return std::unique_ptr<ProcessGroup>(std::make_unique<SingleGroup>(Device::kCpu));
  }();
  return *world;
}

Tensor host_tensor(std::vector<float>& values, Shape shape) {
  REQUIRE(int64_t(values.size()) == shape.numel());
  return Tensor{values.data(), shape, DType::kF32, Device::kCpu};
}

// Host values with a copy on `device` (the same memory on the CPU).
struct Staged {
  Staged(std::vector<float> values, Shape shape, Device device)
      : host(std::move(values)), shape(shape) {
    if (device == Device::kCpu) return;
    buffer = Buffer(host.size() * sizeof(float), device);
    device::copy(on_device(), host_tensor(host, shape));
  }
  Tensor on_device() {
    return buffer.data() ? buffer.tensor(0, shape, DType::kF32) : host_tensor(host, shape);
  }
  const std::vector<float>& read() {
    if (buffer.data()) device::copy(host_tensor(host, shape), on_device());
    return host;
  }
  std::vector<float> host;
  Shape shape;
  Buffer buffer;
};

// Every collective of `world` on its device, against sums worked out by hand.
void check_collectives(ProcessGroup& world) {
  int n = world.size(), me = world.rank();
  Device device = world.device();
  INFO("rank ", me, " of ", n, " on ", world.name());

  std::vector<float> data(6);
  for (size_t i = 0; i < data.size(); ++i) data[i] = float(me) + 0.5f * float(i);
  Staged reduced(data, {6}, device);
  world.all_reduce(reduced.on_device());
  for (size_t i = 0; i < data.size(); ++i)
    CHECK(reduced.read()[i] == float(n * (n - 1) / 2) + float(n) * 0.5f * float(i));

  // Uneven parts (rank r's has r + 1 elements), then even ones (NCCL's own collectives).
  for (bool even : {false, true}) {
    std::vector<int64_t> counts(static_cast<size_t>(n));
    for (int r = 0; r < n; ++r) counts[size_t(r)] = even ? 3 : r + 1;
    int64_t total = std::accumulate(counts.begin(), counts.end(), int64_t(0));
    int64_t my_offset = std::accumulate(counts.begin(), counts.begin() + me, int64_t(0));
    int64_t mine = counts[size_t(me)];
    std::vector<float> in(static_cast<size_t>(total));
    for (int64_t j = 0; j < total; ++j) in[size_t(j)] = float(100 * me + j);
    Staged source(in, {total}, device), part(std::vector<float>(size_t(mine)), {mine}, device);
    world.reduce_scatter_async(part.on_device(), source.on_device(), counts)->wait();
    for (int64_t k = 0; k < mine; ++k)
      CHECK(part.read()[size_t(k)] == float(100 * n * (n - 1) / 2 + n * (my_offset + k)));

    std::vector<float> gathered(static_cast<size_t>(total), -1.0f);
    for (int64_t k = 0; k < mine; ++k) gathered[size_t(my_offset + k)] = float(1000 * me + k);
    Staged all(gathered, {total}, device);
    world.all_gather(all.on_device(), counts);
    for (int r = 0, at = 0; r < n; ++r)
      for (int64_t k = 0; k < counts[size_t(r)]; ++k)
        CHECK(all.read()[size_t(at++)] == float(1000 * r + k));
  }

  // Rows of 3 floats: rank i sends (i + j) % 3 rows to rank j, each row naming (i, j, row).
  std::vector<int64_t> send_rows(static_cast<size_t>(n)), recv_rows(static_cast<size_t>(n));
  std::vector<float> send;
  for (int j = 0; j < n; ++j) {
    send_rows[size_t(j)] = (me + j) % 3;
    recv_rows[size_t(j)] = (j + me) % 3;
    for (int64_t row = 0; row < send_rows[size_t(j)]; ++row)
      send.insert(send.end(), {float(me), float(j), float(row)});
  }
  int64_t received = std::accumulate(recv_rows.begin(), recv_rows.end(), int64_t(0));
  send.resize(std::max<size_t>(send.size(), 3));
  Staged out(std::vector<float>(size_t(std::max<int64_t>(received, 1) * 3), -1.0f),
             {std::max<int64_t>(received, 1), 3}, device);
  Staged in(send, {int64_t(send.size()) / 3, 3}, device);
  world.all_to_all(out.on_device(), recv_rows, in.on_device(), send_rows);
  for (int j = 0, at = 0; j < n; ++j)
    for (int64_t row = 0; row < recv_rows[size_t(j)]; ++row, at += 3) {
      CHECK(out.read()[size_t(at)] == float(j));
      CHECK(out.read()[size_t(at + 1)] == float(me));
      CHECK(out.read()[size_t(at + 2)] == float(row));
    }

  std::vector<double> sums = {double(me), 1.5};
  world.all_reduce_host(sums, ReduceOp::kSum);
  CHECK(sums[0] == double(n * (n - 1) / 2));
  CHECK(sums[1] == 1.5 * n);
  std::vector<int64_t> maxima = {int64_t(me), -int64_t(me)};
  world.all_reduce_host(maxima, ReduceOp::kMax);
  CHECK(maxima == std::vector<int64_t>{n - 1, 0});

  std::vector<int64_t> blocks(static_cast<size_t>(2 * n)), got(static_cast<size_t>(2 * n));
  for (int j = 0; j < n; ++j) blocks[size_t(2 * j)] = 10 * me + j, blocks[size_t(2 * j + 1)] = -me;
  world.all_to_all_host(got, blocks);
  for (int j = 0; j < n; ++j) {
    CHECK(got[size_t(2 * j)] == 10 * j + me);
    CHECK(got[size_t(2 * j + 1)] == -j);
  }

  std::vector<std::string> everyone = world.all_gather_bytes(std::string(size_t(me), 'x') + "!");
  REQUIRE(int(everyone.size()) == n);
  for (int r = 0; r < n; ++r) CHECK(everyone[size_t(r)] == std::string(size_t(r), 'x') + "!");
  CHECK(world.broadcast_bytes(me == 0 ? "from rank 0" : "", 0) == "from rank 0");
  world.barrier();

  // Even and odd ranks: each half sums its own ranks.
  std::unique_ptr<ProcessGroup> half = world.split(me % 2, me, "half");
  CHECK(half->size() == (n + 1 - me % 2) / 2);
  CHECK(half->rank() == me / 2);
  std::vector<int64_t> ranks = {me};
  half->all_reduce_host(ranks, ReduceOp::kSum);
  int64_t expected = 0;
  for (int r = me % 2; r < n; r += 2) expected += r;
  CHECK(ranks[0] == expected);
}

}  // namespace

TEST_CASE("dist: world collectives give what one process computes") {
  check_collectives(test_world());
}

TEST_CASE("dist: world expert-parallel MoE layers equal the local layer") {
  ProcessGroup& world = test_world();
  int n = world.size(), me = world.rank();
  ModelConfig c;
  c.n_layers = 2;
  c.d_model = 16;
  c.d_ff = 24;
  c.vocab_size = 13;
  c.init_std = 0.3;
  c.attention = {4, 2, 2, 4, 4, 0, true};
  c.moe.n_experts = 4;  // divides 1, 2 and 4 ranks
  c.moe.d_expert = 8;
  c.moe.n_shared_experts = 1;
  c.moe.d_shared_expert = 6;
  c.moe.renormalize = true;
  c.moe.top_k = {2};
  c.moe.lbl_coeff = 0.1;
  c.moe.z_loss_coeff = 0.01;
  test::TinyModel local(c, 3, 5), split(c, 3, 5, Device::kCpu, Recompute::kNone, &world);
  // Each rank routes its own tokens, so the ranks' experts see different mixes.
  Rng rng(100 + uint64_t(me));
  for (int64_t i = 0; i < local.model.tokens().numel(); ++i) {
    int32_t token = int32_t(rng.below(uint64_t(c.vocab_size)));
    local.model.tokens().i32()[i] = split.model.tokens().i32()[i] = token;
  }
  double loss_local = local.loss(), loss_split = split.loss();
  CHECK(loss_split == doctest::Approx(loss_local).epsilon(1e-6));
  local.params.zero_grads();
  split.params.zero_grads();
  float scale = float(1.0 / double(local.model.tokens_per_pass()));
  local.model.backward(scale);
  split.model.backward(scale);

  const std::vector<ParamInfo>& a = local.params.list();
  const std::vector<ParamInfo>& b = split.params.list();
  REQUIRE(a.size() == b.size());
  int checked_experts = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    INFO(a[i].name, " on rank ", me);
    REQUIRE(a[i].name == b[i].name);
    CHECK(b[i].global_shape == a[i].shape);
    Tensor ga = a[i].param.grad, gb = b[i].param.grad;
    std::vector<float> expected(ga.f32(), ga.f32() + ga.numel());
    if (b[i].split()) {
      // This rank's experts saw every rank's tokens: the local layers' gradients, summed.
      CHECK(b[i].shape[0] * n == a[i].shape[0]);
      world.all_reduce(host_tensor(expected, a[i].shape));
      int64_t row = ga.numel() / a[i].shape[0];
      expected.assign(expected.begin() + b[i].row_offset * row,
                      expected.begin() + (b[i].row_offset + b[i].shape[0]) * row);
      // Initialised as those rows of the whole tensor.
      CHECK(std::equal(b[i].param.value.f32(), b[i].param.value.f32() + b[i].shape.numel(),
                       a[i].param.value.f32() + b[i].row_offset * row));
      ++checked_experts;
    }
    REQUIRE(int64_t(expected.size()) == gb.numel());
    float scale_max = 0, worst = 0;
    for (size_t k = 0; k < expected.size(); ++k) {
      scale_max = std::max(scale_max, std::fabs(expected[k]));
      worst = std::max(worst, std::fabs(expected[k] - gb.f32()[k]));
    }
    CHECK(worst <= 1e-5f * scale_max + 1e-7f);
  }
  CHECK(checked_experts == (n > 1 ? 3 * c.n_layers : 0));  // gate, up, down per layer
}

#if SIGMA_NCCL
namespace {

// The GPU check's launch: torchrun-style ranks (scripts/gpu-dist-check), else one rank,
// whose rendezvous waits for nobody.
Launch gpu_launch() {
  Launch launch = detect_launch();
  if (launch.launcher != Launcher::kNone) return launch;
  launch.launcher = Launcher::kEnv;
  launch.master_addr = "127.0.0.1";
  launch.master_port = 0;  // any free port
  return launch;
}

// A tensor's bytes on the host, for bit-for-bit comparisons of any dtype.
std::vector<char> host_bytes(const Tensor& t) {
  std::vector<char> bytes(t.bytes());
  Tensor host = t;
  host.device = Device::kCpu;
  host.data = bytes.data();
  device::copy(host, t);
  return bytes;
}

}  // namespace

TEST_CASE("dist: cuda NCCL collectives, and a ZeRO-1 step equal to plain AdamW bit for bit") {
  SIGMA_REQUIRE_GPU();
  Launch launch = gpu_launch();
  std::unique_ptr<ProcessGroup> world = make_nccl_world(launch, nullptr, nullptr, 60);
  REQUIRE(world->size() == launch.world_size);
  check_collectives(*world);

  // Every rank computes the same tokens with its loss scaled by 1/n (n = 1 or 2): the
  // reduced gradients are then one process's exactly (a power-of-two scale commutes with
  // every rounding, and two halves add up exactly), so the ZeRO-1 update must equal plain
  // AdamW's to the bit, weights gathered back and bf16 copies included.
  int n = world->size();
  REQUIRE((n == 1 || n == 2));
  ModelConfig c;
  c.n_layers = 2;
  c.d_model = 128;
  c.d_ff = 256;
  c.vocab_size = 300;
  c.init_std = 0.05;
  c.attention = {4, 1, 2, 64, 64, 96, true};  // head dims of 64, as the CUDA attention needs
  test::TinyModel plain(c, 2, 64, Device::kCuda), sharded(c, 2, 64, Device::kCuda);
  OptimizerConfig optimizer;
  AdamW adamw(optimizer, plain.params);
  DataParallel dp(*world, nullptr, sharded.params, sharded.model, optimizer, 1.0 / 64, true);
  CHECK(dp.plan().buckets.size() > 2);
  float scale = float(1.0 / double(plain.model.tokens_per_pass()));
  for (int64_t step = 1; step <= 2; ++step) {
    plain.params.zero_grads();
    sharded.params.zero_grads();
    double plain_loss = plain.model.forward(scale);
    plain.model.backward(scale);
    double sharded_loss = sharded.model.forward(scale / float(n));
    dp.arm_last_backward();
    sharded.model.backward(scale / float(n));
    double norm = dp.finish_gradients();
    double plain_norm = std::sqrt(ops::sum_squares(plain.params.grads().whole(DType::kF32)));
    MESSAGE(fmt::format(
        "step {}: loss {:.6f} vs {:.6f}, grad norm {:.6f} vs {:.6f}, waited {:.3f} ms", step,
        sharded_loss, plain_loss, norm, plain_norm, dp.last_wait_ms()));
    CHECK(sharded_loss == plain_loss);
    CHECK(norm == doctest::Approx(plain_norm).epsilon(1e-6));
    adamw.step(1e-3, 1.0, step);
    dp.step(1e-3, 1.0, step);
  }
  // The bf16 compute weights are whole on every rank; the fp32 values only in this rank's
  // rows, which its checkpoint writes from the GPU (others' rows are not gathered).
  const std::vector<ParamInfo>& a = plain.params.list();
  const std::vector<ParamInfo>& b = sharded.params.list();
  std::map<std::string, Tensor> plain_values;
  for (size_t i = 0; i < a.size(); ++i) {
    INFO(a[i].name);
    CHECK(host_bytes(a[i].param.weight) == host_bytes(b[i].param.weight));
    plain_values["model/" + a[i].name] = a[i].param.value;
  }
  int64_t rows = 0;
  for (const CheckpointTensor& t : dp.checkpoint_tensors({})) {
    if (t.name.rfind("model/", 0) != 0) continue;
    INFO(t.name);
    CHECK(t.data.device == Device::kCuda);
    Tensor mine = plain_values.at(t.name).slice_rows(t.row_offset, t.row_offset + t.data.shape[0]);
    CHECK(host_bytes(mine) == host_bytes(t.data));
    rows += t.data.shape[0];
  }
  CHECK(rows > 0);
}
#endif
