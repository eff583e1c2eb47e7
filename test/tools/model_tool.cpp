// A test driver for the Hugging Face cross-check (test/integration/hf_transformers.sh):
// sigma's logits and greedy continuation for given token ids, and exact weight comparison of
// two checkpoints.
//
//   model_tool logits CKPT IDS_FILE OUT_PREFIX N_NEW
//       IDS_FILE: whitespace-separated token ids. Writes OUT_PREFIX.logits (f32 [T, V] raw,
//       from one full-sequence decoder pass) and OUT_PREFIX.greedy (the ids of N_NEW
//       greedy tokens from the KV-cache decoder, space-separated).
//   model_tool encode CKPT TEXT_FILE
//       prints the ids the run's tokenizer gives the file's text, space-separated.
//   model_tool same-weights CKPT_A CKPT_B
//       exit 0 when every parameter and state tensor has the same name, shape and bits;
//       else prints the first difference and exits 1.
#include "core/error.h"
#include "infer/sampler.h"
#include "infer/trained_model.h"

#include <fmt/format.h>

#include <cstring>
#include <fstream>
#include <iterator>
#include <vector>

using namespace sigma;

namespace {

int logits(const std::string& ckpt, const std::string& ids_file, const std::string& out,
           int64_t n_new) {
  TrainedModel model(ckpt);
  std::ifstream in(ids_file);
  std::vector<int32_t> ids{std::istream_iterator<int32_t>(in), {}};
  int64_t t = int64_t(ids.size());
  {
    LoadedDecoder whole(model, t, t);
    Tensor all = whole.decoder.prefill_logits(ids);
    std::ofstream(out + ".logits", std::ios::binary)
        .write(reinterpret_cast<const char*>(all.f32()), std::streamsize(all.bytes()));
  }
  LoadedDecoder loaded(model, t + n_new, 4);
  Sampler greedy({});
  std::string text;
  Tensor next = loaded.decoder.next_logits(ids);
  for (int64_t i = 0; i < n_new; ++i) {
    int32_t id = greedy.sample({next.f32(), size_t(next.numel())});
    text += fmt::format("{}{}", i ? " " : "", id);
    if (i + 1 < n_new) next = loaded.decoder.next_logits({&id, 1});
  }
  std::ofstream(out + ".greedy") << text << "\n";
  return 0;
}

int encode(const std::string& ckpt, const std::string& text_file) {
  TrainedModel model(ckpt);
  std::ifstream in(text_file, std::ios::binary);
  std::string text{std::istreambuf_iterator<char>(in), {}};
  std::string out;
  for (int32_t id : model.tokenizer().encode(text)) out += fmt::format("{}{}", out.empty() ? "" : " ", id);
  fmt::print("{}\n", out);
  return 0;
}

int same_weights(const std::string& a_path, const std::string& b_path) {
  TrainedModel a(a_path), b(b_path);
  auto tensors = [](TrainedModel& m) {
    std::vector<std::pair<std::string, Tensor>> all;
    for (const ParamInfo& p : m.params().list()) all.emplace_back(p.name, p.param.value);
    for (const auto& s : m.state_tensors()) all.push_back(s);
    return all;
  };
  auto ta = tensors(a), tb = tensors(b);
  if (ta.size() != tb.size()) {
    fmt::print("{} tensors against {}\n", ta.size(), tb.size());
    return 1;
  }
  for (size_t i = 0; i < ta.size(); ++i) {
    const auto& [name, x] = ta[i];
    const auto& [name_b, y] = tb[i];
    if (name != name_b || !(x.shape == y.shape) || std::memcmp(x.data, y.data, x.bytes()) != 0) {
      fmt::print("differs: {} {} against {} {}\n", name, x.shape.str(), name_b, y.shape.str());
      return 1;
    }
  }
  fmt::print("same weights: {} tensors, bit for bit\n", ta.size());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    std::string mode = argc > 1 ? argv[1] : "";
    if (mode == "logits" && argc == 6)
      return logits(argv[2], argv[3], argv[4], std::stoll(argv[5]));
    if (mode == "encode" && argc == 4) return encode(argv[2], argv[3]);
    if (mode == "same-weights" && argc == 4) return same_weights(argv[2], argv[3]);
    fmt::print(stderr, "usage: model_tool logits CKPT IDS OUT N | encode CKPT TEXT | same-weights A B\n");
    return 2;
  } catch (const std::exception& e) {
    fmt::print(stderr, "model_tool: {}\n", e.what());
    return 2;
  }
}
