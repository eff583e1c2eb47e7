// Distributed training pieces that need no other rank: launcher variables, the TCP
// rendezvous, the [parallelism] checks, the ZeRO-1 bucket and shard plan, and ZeRO shards
// that reload on other layouts. The collectives themselves: test_dist_world.cpp.
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

ParamSpan span(size_t index, int64_t offset, int64_t rows, int64_t row_numel, int64_t part,
               ReduceGroup group = ReduceGroup::kWorld) {
  return {index, offset, rows * row_numel, row_numel, part, group};
}

}  // namespace

TEST_CASE("dist: launcher variables give rank, world size and rendezvous") {
  Launch none = detect_launch(env_of({}));
  CHECK(none.launcher == Launcher::kNone);
  CHECK(none.world_size == 1);

  Launch mpi = detect_launch(env_of({{"OMPI_COMM_WORLD_RANK", "3"},
                                     {"OMPI_COMM_WORLD_SIZE", "4"},
                                     {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                                     {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"}}));
  CHECK(mpi.launcher == Launcher::kMpi);
  CHECK(mpi.rank == 3);
  CHECK(mpi.world_size == 4);
  CHECK(mpi.local_rank == 1);
  CHECK(mpi.local_size == 2);

  Launch torchrun = detect_launch(env_of({{"RANK", "1"},
                                          {"WORLD_SIZE", "2"},
                                          {"LOCAL_RANK", "1"},
                                          {"MASTER_ADDR", "node7"},
                                          {"MASTER_PORT", "29600"}}));
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
  CHECK_THROWS_WITH_AS(
      detect_launch(env_of({{"RANK", "2"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "x"}})),
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
  std::vector<ParamSpan> params = {span(0, 0, 10, 4, 0), span(1, 44, 1, 4, 1), span(2, 52, 6, 4, 1),
                                   span(3, 80, 2, 8, 1, ReduceGroup::kExpertData),
                                   span(4, 100, 10, 4, 2)};
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
  auto root =
      std::filesystem::temp_directory_path() / fmt::format("sigma_test_zero_{}", ::getpid());
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
