// Distributed training pieces: launcher variables, the [parallelism] checks, the ZeRO-1
// bucket and shard plan, the collectives of whatever world this process runs in, and the
// expert-parallel MoE layer against the local one, and ZeRO shards that reload on other
// layouts.
//
// Run alone (ctest) the world is one process and the collectives are copies; the
// integration test test/integration/dist_collectives.sh runs the "dist: world" cases under
// `mpirun -np 2` and `-np 4`, where they check real MPI traffic.
#include "core/checkpoint/checkpoint.h"
#include "core/dist/launch.h"
#include "core/dist/mpi_group.h"
#include "core/dist/single_group.h"
#include "core/dist/tcp_rendezvous.h"
#include "core/dist/world.h"
#include "core/recipe/recipe.h"
#include "core/train/data_parallel.h"
#include "core/train/zero_plan.h"
#include "test/tiny_model.h"

#include <doctest/doctest.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <numeric>
#include <string>
#include <thread>

using namespace sigma;

namespace {

GetEnv env_of(std::map<std::string, std::string> vars) {
  auto shared = std::make_shared<std::map<std::string, std::string>>(std::move(vars));
  return [shared](const char* name) -> const char* {
    auto it = shared->find(name);
    return it == shared->end() ? nullptr : it->second.c_str();
  };
}

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

ParamSpan span(size_t index, int64_t offset, int64_t rows, int64_t row_numel, int64_t part,
               ReduceGroup group = ReduceGroup::kWorld) {
  return {index, offset, rows * row_numel, row_numel, part, group};
}

}  // namespace

TEST_CASE("dist: launcher variables give rank, world size and rendezvous") {
  Launch none = detect_launch(env_of({}));
  CHECK(none.launcher == Launcher::kNone);
  CHECK(none.world_size == 1);

  Launch mpi = detect_launch(env_of({{"OMPI_COMM_WORLD_RANK", "3"}, {"OMPI_COMM_WORLD_SIZE", "4"},
                                     {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                                     {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"}}));
  CHECK(mpi.launcher == Launcher::kMpi);
  CHECK(mpi.rank == 3);
  CHECK(mpi.world_size == 4);
  CHECK(mpi.local_rank == 1);
  CHECK(mpi.local_size == 2);

  Launch torchrun = detect_launch(env_of({{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", "1"},
                                          {"MASTER_ADDR", "node7"}, {"MASTER_PORT", "29600"}}));
  CHECK(torchrun.launcher == Launcher::kEnv);
  CHECK(torchrun.rank == 1);
  CHECK(torchrun.master_addr == "node7");
  CHECK(torchrun.master_port == 29600);

  // srun without a rendezvous address goes through MPI's PMI.
  Launch srun = detect_launch(env_of({{"SLURM_PROCID", "5"}, {"SLURM_NTASKS", "8"}}));
  CHECK(srun.launcher == Launcher::kMpi);
  CHECK(srun.rank == 5);
  // One torchrun-style rank is no launch at all.
  CHECK(detect_launch(env_of({{"RANK", "0"}, {"WORLD_SIZE", "1"}})).launcher == Launcher::kNone);

  CHECK_THROWS_WITH_AS(detect_launch(env_of({{"RANK", "0"}, {"WORLD_SIZE", "2"}})),
                       doctest::Contains("MASTER_ADDR is not set"), UserError);
  CHECK_THROWS_WITH_AS(detect_launch(env_of({{"RANK", "2"}, {"WORLD_SIZE", "2"},
                                             {"MASTER_ADDR", "x"}})),
                       doctest::Contains("RANK=2 is not below WORLD_SIZE=2"), UserError);
  CHECK_THROWS_WITH_AS(detect_launch(env_of({{"OMPI_COMM_WORLD_SIZE", "two"}})),
                       doctest::Contains("OMPI_COMM_WORLD_SIZE=two"), UserError);
}

TEST_CASE("dist: the TCP rendezvous hands rank 0's bytes to every rank") {
  // A port the system just gave out, so it is free.
  int probe = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  REQUIRE(::bind(probe, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0);
  REQUIRE(::getsockname(probe, reinterpret_cast<sockaddr*>(&address), &length) == 0);
  ::close(probe);
  auto launch = [&](int rank) {
    Launch l;
    l.launcher = Launcher::kEnv;
    l.rank = rank;
    l.world_size = 3;
    l.master_addr = "127.0.0.1";
    l.master_port = ntohs(address.sin_port);
    return l;
  };
  std::string id(128, '\0');
  for (size_t i = 0; i < id.size(); ++i) id[i] = char(i * 7);
  std::string got1, got2;
  // The others start first: they retry until rank 0 listens.
  std::thread one([&] { got1 = rendezvous_over_tcp(launch(1), "", 10); });
  std::thread two([&] { got2 = rendezvous_over_tcp(launch(2), "", 10); });
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  CHECK(rendezvous_over_tcp(launch(0), id, 10) == id);
  one.join();
  two.join();
  CHECK(got1 == id);
  CHECK(got2 == id);

  // Nobody at the address: a clear error once the time is up.
  Launch lonely = launch(1);
  CHECK_THROWS_WITH_AS(rendezvous_over_tcp(lonely, "", 0.3),
                       doctest::Contains("rank 0 did not answer in time"), UserError);
}

TEST_CASE("dist: the layout is checked against the recipe and the world size") {
  ParallelismConfig config;
  Launch four;
  four.launcher = Launcher::kMpi;
  four.world_size = 4;
  CHECK(check_layout(config, four) == 4);  // dp = 0: every rank
  config.dp = 2;
  CHECK_THROWS_WITH_AS(check_layout(config, four),
                       doctest::Contains("parallelism.dp = 2 but 4 ranks were launched"),
                       EveryRankError);
  config.dp = 4;
  config.ep = 3;
  CHECK_THROWS_WITH_AS(check_layout(config, four),
                       doctest::Contains("parallelism.ep = 3 does not divide"), EveryRankError);

  std::string dense = "[run]\nname = \"t\"\n[train]\nsteps = 1\n[parallelism]\nep = 2\n";
  CHECK_THROWS_WITH_AS(parse_recipe(dense, "r.toml"),
                       doctest::Contains("parallelism.ep: 2 needs experts to split"), UserError);
  std::string moe =
      "[run]\nname = \"t\"\n[train]\nsteps = 1\n[model.moe]\nn_experts = 6\nd_expert = 8\n"
      "[parallelism]\nep = 4\n";
  CHECK_THROWS_WITH_AS(parse_recipe(moe, "r.toml"),
                       doctest::Contains("4 does not divide model.moe.n_experts = 6"), UserError);
}

TEST_CASE("dist: zero plan cuts buckets in backward order and shards at row starts") {
  // embedding [10 rows x 4] part 0; layer 0: norm [4] + matrix [6 x 4] part 1; experts
  // [2 x 8] part 1; head [10 x 4] part 2. Gaps of 4 elements between tensors (alignment).
  std::vector<ParamSpan> params = {
      span(0, 0, 10, 4, 0),   span(1, 44, 1, 4, 1), span(2, 52, 6, 4, 1),
      span(3, 80, 2, 8, 1, ReduceGroup::kExpertData), span(4, 100, 10, 4, 2)};
  ZeroPlan plan = plan_zero(params, 40, {2, 1}, {1, 0});
  // Backward order: head, then the experts (their own group), then layer 0's dense part,
  // then the embedding.
  REQUIRE(plan.buckets.size() == 4);
  CHECK(plan.buckets[0].params.front().index == 4);
  CHECK(plan.buckets[1].group == ReduceGroup::kExpertData);
  CHECK(plan.buckets[2].params.size() == 2);  // norm + matrix: 32 elements fit in 40
  CHECK(plan.buckets[3].params.front().index == 0);
  std::vector<int64_t> ready;
  for (const Bucket& b : plan.buckets) ready.push_back(b.ready_part);
  CHECK(ready == std::vector<int64_t>{2, 1, 1, 0});

  // Head [100, 140): halves at row 5 for two ranks.
  CHECK(plan.buckets[0].bounds == std::vector<int64_t>{100, 120, 140});
  // Norm + matrix [44, 76): target 60 is the matrix's row start 60 (52 + 2 rows of 4).
  CHECK(plan.buckets[2].bounds == std::vector<int64_t>{44, 60, 76});
  // The expert group has one rank here: it owns the whole bucket.
  CHECK(plan.buckets[1].bounds == std::vector<int64_t>{80, 96});
  // Rank 1 owns the second halves, and the expert bucket whole (rank 0 of its group).
  CHECK(plan.shard_numel == 20 + 16 + 16 + 20);
  CHECK(plan.buckets[3].shard_offset == 20 + 16 + 16);

  // A target inside a gap goes to the next tensor's start; shards can be empty when rows
  // are coarse.
  std::vector<ParamSpan> coarse = {span(0, 0, 1, 10, 0), span(1, 16, 1, 10, 0)};
  CHECK(row_aligned_bounds(coarse, 0, 26, 3) == std::vector<int64_t>{0, 16, 16, 26});
  CHECK(row_aligned_bounds(coarse, 0, 26, 2) == std::vector<int64_t>{0, 16, 26});

  RowRange rows = rows_within(params[2], 60, 76);
  CHECK(rows.first == 2);
  CHECK(rows.last == 6);
  CHECK(rows_within(params[2], 0, 40).rows() == 0);
}

TEST_CASE("dist: world collectives give what one process computes") {
  ProcessGroup& world = test_world();
  int n = world.size(), me = world.rank();
  INFO("rank ", me, " of ", n);

  std::vector<float> data(6);
  for (size_t i = 0; i < data.size(); ++i) data[i] = float(me) + 0.5f * float(i);
  world.all_reduce(host_tensor(data, {6}));
  for (size_t i = 0; i < data.size(); ++i)
    CHECK(data[i] == float(n * (n - 1) / 2) + float(n) * 0.5f * float(i));

  // Uneven parts: rank r's part has r + 1 elements.
  std::vector<int64_t> counts(static_cast<size_t>(n));
  std::iota(counts.begin(), counts.end(), 1);
  int64_t total = std::accumulate(counts.begin(), counts.end(), int64_t(0));
  int64_t my_offset = std::accumulate(counts.begin(), counts.begin() + me, int64_t(0));
  std::vector<float> in(static_cast<size_t>(total)), out(size_t(counts[size_t(me)]));
  for (int64_t j = 0; j < total; ++j) in[size_t(j)] = float(100 * me + j);
  world.reduce_scatter_async(host_tensor(out, {counts[size_t(me)]}), host_tensor(in, {total}), counts)
      ->wait();
  for (int64_t k = 0; k < counts[size_t(me)]; ++k)
    CHECK(out[size_t(k)] == float(100 * n * (n - 1) / 2 + n * (my_offset + k)));

  std::vector<float> gathered(static_cast<size_t>(total), -1.0f);
  for (int64_t k = 0; k < counts[size_t(me)]; ++k) gathered[size_t(my_offset + k)] = float(1000 * me + k);
  world.all_gather(host_tensor(gathered, {total}), counts);
  for (int r = 0, at = 0; r < n; ++r)
    for (int64_t k = 0; k < counts[size_t(r)]; ++k) CHECK(gathered[size_t(at++)] == float(1000 * r + k));

  // Rows of 3 floats: rank i sends (i + j) % 3 rows to rank j, each row naming (i, j, row).
  std::vector<int64_t> send_rows(static_cast<size_t>(n)), recv_rows(static_cast<size_t>(n));
  std::vector<float> send, recv;
  for (int j = 0; j < n; ++j) {
    send_rows[size_t(j)] = (me + j) % 3;
    recv_rows[size_t(j)] = (j + me) % 3;
    for (int64_t row = 0; row < send_rows[size_t(j)]; ++row)
      send.insert(send.end(), {float(me), float(j), float(row)});
  }
  int64_t received = std::accumulate(recv_rows.begin(), recv_rows.end(), int64_t(0));
  recv.assign(size_t(received * 3), -1.0f);
  send.resize(std::max<size_t>(send.size(), 3));
  world.all_to_all(host_tensor(recv, {received, 3}), recv_rows,
                   host_tensor(send, {int64_t(send.size()) / 3, 3}), send_rows);
  for (int j = 0, at = 0; j < n; ++j)
    for (int64_t row = 0; row < recv_rows[size_t(j)]; ++row, at += 3) {
      CHECK(recv[size_t(at)] == float(j));
      CHECK(recv[size_t(at + 1)] == float(me));
      CHECK(recv[size_t(at + 2)] == float(row));
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

  std::vector<std::string> all = world.all_gather_bytes(std::string(size_t(me), 'x') + "!");
  REQUIRE(int(all.size()) == n);
  for (int r = 0; r < n; ++r) CHECK(all[size_t(r)] == std::string(size_t(r), 'x') + "!");
  CHECK(world.broadcast_bytes(me == 0 ? "from rank 0" : "", 0) == "from rank 0");
  world.barrier();

  // Even and odd ranks: each half sums its own ranks.
  std::unique_ptr<ProcessGroup> half = world.split(me % 2, me, "half");
  CHECK(half->size() == (n + 1 - me % 2) / 2);
  CHECK(half->rank() == me / 2);
  std::vector<int64_t> mine = {me};
  half->all_reduce_host(mine, ReduceOp::kSum);
  int64_t expected = 0;
  for (int r = me % 2; r < n; r += 2) expected += r;
  CHECK(mine[0] == expected);
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

namespace {

// A group that only answers rank() and size(): enough for planning shards in one process.
class LayoutOnlyGroup : public SingleGroup {
 public:
  LayoutOnlyGroup(int rank, int size) : SingleGroup(Device::kCpu), rank_(rank), size_(size) {}
  int rank() const override { return rank_; }
  int size() const override { return size_; }

 private:
  int rank_, size_;
};

// What the moments hold in the test: a function of the weight, so any rank can check them.
float moment_m(float w) { return 2 * w + 1; }
float moment_v(float w) { return w * w; }

}  // namespace

TEST_CASE("dist: ZeRO shards of two ranks reload as one rank and as four, bit for bit") {
  ModelConfig c;
  c.n_layers = 2;
  c.d_model = 16;
  c.d_ff = 24;
  c.vocab_size = 13;
  c.attention = {4, 2, 2, 4, 4, 0, false};
  OptimizerConfig optimizer;
  auto root = std::filesystem::temp_directory_path() / fmt::format("sigma_test_zero_{}", ::getpid());
  std::filesystem::remove_all(root);
  // 1 KiB buckets: several buckets, shards cut inside tensors.
  const double bucket_mb = 1.0 / 1024;

  test::TinyModel saved(c);
  SaveRequest request;
  request.root = root.string();
  request.step = 3;
  request.world_size = 2;
  request.state.ints = {{"step", 3}};
  std::string dir = prepare_checkpoint_dir(request.root, request.step);
  std::vector<RankFileInfo> infos;
  for (int r = 0; r < 2; ++r) {
    LayoutOnlyGroup group(r, 2);
    DataParallel dp(group, nullptr, saved.params, saved.model, optimizer, bucket_mb, true);
    CHECK(dp.plan().buckets.size() > 2);
    request.rank = r;
    request.tensors = dp.checkpoint_tensors({});
    for (CheckpointTensor& t : request.tensors) {
      // Moments share rows with the weight of the same name (listed just before them).
      if (t.name.rfind("model/", 0) == 0) continue;
      const CheckpointTensor& weight = *std::find_if(
          request.tensors.begin(), request.tensors.end(), [&](const CheckpointTensor& w) {
            return w.name == "model/" + t.name.substr(t.name.find('/', 6) + 1);
          });
      bool m = t.name.rfind("optim/m/", 0) == 0;
      for (int64_t i = 0; i < t.data.numel(); ++i)
        t.data.f32()[i] = m ? moment_m(weight.data.f32()[i]) : moment_v(weight.data.f32()[i]);
    }
    infos.push_back(write_rank_file(dir, request));
  }
  commit_checkpoint(dir, request, infos);

  for (int ranks : {1, 4}) {
    for (int r = 0; r < ranks; ++r) {
      INFO(ranks, " ranks, rank ", r);
      test::TinyModel loaded(c);
      loaded.params.initialize(99);  // other values, overwritten where this rank loads
      LayoutOnlyGroup group(r, ranks);
      DataParallel dp(group, nullptr, loaded.params, loaded.model, optimizer, bucket_mb, true);
      std::vector<CheckpointTensor> into = dp.checkpoint_tensors({});
      load_checkpoint(find_latest_checkpoint(root.string()), into);
      int64_t rows_loaded = 0;
      for (const CheckpointTensor& t : into) {
        std::string name = t.name.substr(t.name.rfind('/') + 1);
        const ParamInfo& p = *std::find_if(saved.params.list().begin(), saved.params.list().end(),
                                           [&](const ParamInfo& q) { return q.name == name; });
        int64_t row = p.shape.numel() / p.shape[0];
        const float* expected = p.param.value.f32() + t.row_offset * row;
        bool m = t.name.rfind("optim/m/", 0) == 0, v = t.name.rfind("optim/v/", 0) == 0;
        bool same = true;
        for (int64_t i = 0; i < t.data.numel(); ++i) {
          float want = m ? moment_m(expected[i]) : v ? moment_v(expected[i]) : expected[i];
          same = same && t.data.f32()[i] == want;
        }
        CHECK_MESSAGE(same, t.name, " rows from ", t.row_offset);
        if (!m && !v) rows_loaded += t.data.shape[0];
      }
      CHECK(rows_loaded > 0);
    }
  }
  std::filesystem::remove_all(root);
}
