// The Hugging Face conversion without transformers: safetensors written and read back (fp32
// exact, bf16 rounded to nearest even, sharded with an index), the architecture choice, and
// config.json round trips. test/integration/hf_transformers.sh checks the same files against
// transformers itself where it is installed.
#include "convert/hf_config.h"
#include "convert/safetensors.h"
#include "core/error.h"

#include <doctest/doctest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

using namespace sigma;
namespace fs = std::filesystem;

namespace {

fs::path fresh_dir(const std::string& name) {
  fs::path dir = fs::temp_directory_path() / ("sigma_test_convert_" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

ModelConfig dense(bool qk_norm) {
  ModelConfig c;
  c.n_layers = 3;
  c.d_model = 32;
  c.d_ff = 48;
  c.vocab_size = 320;
  c.rope_theta = 50000;
  c.attention = {4, 2, 2, 8, 8, 0, qk_norm};
  return c;
}

}  // namespace

TEST_CASE("convert: safetensors round trip, sharded, fp32 and bf16") {
  std::vector<float> a = {1.0f, -2.5f, 3.0e-8f, 1.0f + 1.0f / 256 + 1.0f / 512, 65504.0f, -0.0f};
  std::vector<float> b(40);
  for (size_t i = 0; i < b.size(); ++i) b[i] = float(i) * 0.37f - 5.0f;
  std::vector<safetensors::TensorToWrite> tensors = {{"a", {2, 3}, a.data()},
                                                     {"b.weight", {40}, b.data()}};
  fs::path dir = fresh_dir("fp32");
  safetensors::write_sharded(dir.string(), tensors, safetensors::DType::kF32, 100);
  CHECK(fs::exists(dir / "model.safetensors.index.json"));  // 24 + 160 bytes > 100: two shards
  auto read = safetensors::read_dir(dir.string());
  REQUIRE(read.size() == 2);
  CHECK(read["a"].shape == std::vector<int64_t>{2, 3});
  CHECK(std::memcmp(read["a"].values.data(), a.data(), a.size() * 4) == 0);
  CHECK(std::memcmp(read["b.weight"].values.data(), b.data(), b.size() * 4) == 0);

  dir = fresh_dir("bf16");
  safetensors::write_sharded(dir.string(), tensors, safetensors::DType::kBF16, 1 << 20);
  CHECK(fs::exists(dir / "model.safetensors"));
  read = safetensors::read_dir(dir.string());
  CHECK(read["a"].stored == safetensors::DType::kBF16);
  // 1 + 2^-8 + 2^-9 lies between bf16 neighbours 1 + 2^-7 and 1: rounds up (not a tie).
  CHECK(read["a"].values[3] == 1.0f + 1.0f / 128);
  CHECK(read["a"].values[1] == -2.5f);
  CHECK(std::signbit(read["a"].values[5]));

  std::ofstream(dir / "model.safetensors", std::ios::trunc) << "garbage";
  CHECK_THROWS_AS(safetensors::read_dir(dir.string()), UserError);
}

TEST_CASE("convert: the architecture is native only where it is exact") {
  std::string why;
  CHECK(choose_hf_architecture(dense(false), {1}, &why) == HfArchitecture::kLlama);
  CHECK(choose_hf_architecture(dense(true), {1}, &why) == HfArchitecture::kQwen3);
  ModelConfig diff = dense(false);
  diff.attention.n_v = 4;
  CHECK(choose_hf_architecture(diff, {1}, &why) == HfArchitecture::kSigma);
  CHECK(why.find("DiffQKV") != std::string::npos);
  ModelConfig augq = dense(true);
  augq.attention.d_augq = 16;
  CHECK(choose_hf_architecture(augq, {1}, &why) == HfArchitecture::kSigma);
  ModelConfig moe = dense(true);
  moe.moe.n_experts = 4;
  moe.moe.d_expert = 8;
  moe.moe.dense_layers = 1;
  moe.moe.top_k = {2};
  CHECK(choose_hf_architecture(moe, moe.moe.top_k, &why) == HfArchitecture::kQwen3Moe);
  CHECK(choose_hf_architecture(moe, {1, 2, 1}, &why) == HfArchitecture::kSigma);
  moe.moe.n_shared_experts = 1;
  CHECK(choose_hf_architecture(moe, moe.moe.top_k, &why) == HfArchitecture::kSigma);
  CHECK(why == "shared experts");
}

TEST_CASE("convert: config.json round trips for every architecture") {
  ModelConfig moe = dense(true);
  moe.moe.n_experts = 4;
  moe.moe.d_expert = 8;
  moe.moe.dense_layers = 1;
  moe.moe.top_k = {2};
  moe.moe.renormalize = true;
  ModelConfig sigma = moe;
  sigma.attention = {4, 1, 2, 8, 6, 16, true};
  sigma.moe.score = RouterScore::kSigmoid;
  sigma.moe.n_shared_experts = 1;
  sigma.moe.d_shared_expert = 12;
  sigma.moe.bias_update_rate = 0.01;
  sigma.moe.top_k = {3, 3, 1};
  sigma.tie_embeddings = true;
  for (const ModelConfig& c : {dense(false), dense(true), moe, sigma}) {
    HfArchitecture arch = choose_hf_architecture(c, c.moe.top_k, nullptr);
    CAPTURE(hf_architecture_name(arch));
    ImportedConfig back = model_config_from_hf(
        hf_config_json(c, arch, c.moe.top_k, {128, 256, "float32"}), "config.json");
    CHECK(back.arch == arch);
    CHECK(back.max_positions == 128);
    ModelConfig want = c;
    want.init_scale_residual = back.model.init_scale_residual;  // not part of a model file
    CHECK(back.model == want);
  }
  nlohmann::json gpt2 = {{"architectures", {"GPT2LMHeadModel"}}};
  CHECK_THROWS_WITH_AS(model_config_from_hf(gpt2, "x/config.json"),
                       doctest::Contains("\"GPT2LMHeadModel\" is not supported"), UserError);
  nlohmann::json scaled =
      hf_config_json(dense(false), HfArchitecture::kLlama, {1}, {128, 256, "float32"});
  scaled["rope_scaling"] = {{"rope_type", "yarn"}};
  CHECK_THROWS_AS(model_config_from_hf(scaled, "config.json"), UserError);
}
