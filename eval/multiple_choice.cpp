#include "eval/multiple_choice.h"

#include "eval/task_file.h"

#include <cmath>
#include <filesystem>

namespace sigma {

using nlohmann::json;

ChoiceRequest encode_choice(const Tokenizer& tokenizer, const std::string& context_text,
                            const std::string& continuation_text) {
  std::string context = context_text, continuation = continuation_text;
  size_t kept = context.find_last_not_of(" \t\n\r");
  kept = kept == std::string::npos ? 0 : kept + 1;
  continuation = context.substr(kept) + continuation;
  context.resize(kept);
  ChoiceRequest r;
  if (context.empty()) {
    r.context = {tokenizer.eos_id()};
    r.continuation = tokenizer.encode(continuation);
    return r;
  }
  std::vector<int32_t> whole = tokenizer.encode(context + continuation);
  r.context = tokenizer.encode(context);
  size_t n = std::min(r.context.size(), whole.size());
  r.continuation.assign(whole.begin() + int64_t(n), whole.end());
  return r;
}

void validate_choice_item(const json& item) {
  string_field(item, "context");
  const json& choices = array_field(item, "choices");
  if (choices.size() < 2) throw ItemError{"\"choices\" needs at least two entries"};
  for (const json& c : choices)
    if (!c.is_string() || c.get_ref<const std::string&>().empty())
      throw ItemError{"every choice must be a non-empty string"};
  int64_t answer = int_field(item, "answer");
  if (answer < 0 || answer >= int64_t(choices.size()))
    throw ItemError{
        fmt::format("\"answer\" {} is not an index of the {} choices", answer, choices.size())};
  if (item.contains("delimiter")) string_field(item, "delimiter");
}

ChoicePick pick_choice(const std::vector<double>& ll, const std::vector<std::string>& choices) {
  ChoicePick pick;
  for (size_t i = 1; i < ll.size(); ++i) {
    if (ll[i] > ll[pick.raw]) pick.raw = i;
    if (ll[i] / double(choices[i].size()) >
        ll[pick.per_byte] / double(choices[pick.per_byte].size()))
      pick.per_byte = i;
  }
  return pick;
}

std::vector<MetricResult> evaluate_multiple_choice(TrainedModel& model, const std::string& path,
                                                   int64_t limit, int64_t max_seq) {
  std::vector<TaskItem> items = read_task_file(path, limit, validate_choice_item);
  const Tokenizer& tokenizer = model.tokenizer();
  // Pre-encode everything, so the cache is sized once and too-long items are truncated
  // from the left as the harness does (keeping the continuation whole).
  struct Encoded {
    std::vector<int32_t> context;
    std::vector<std::vector<int32_t>> continuations;
    std::vector<std::string> choices;
    size_t answer;
  };
  std::vector<Encoded> encoded;
  int64_t longest = 1;
  for (const TaskItem& item : items) {
    Encoded e;
    std::string context = item.json["context"];
    std::string delimiter = item.json.value("delimiter", " ");
    for (const json& c : item.json["choices"]) {
      ChoiceRequest r = encode_choice(tokenizer, context, delimiter + c.get<std::string>());
      if (r.continuation.empty()) fail("{}:{}: a choice encodes to no token", path, item.line);
      e.context = r.context;  // the same for every choice: it depends on the context only
      e.continuations.push_back(r.continuation);
      e.choices.push_back(c.get<std::string>());
      longest = std::max(longest, int64_t(r.context.size() + r.continuation.size()));
    }
    e.answer = item.json["answer"].get<size_t>();
    encoded.push_back(std::move(e));
  }
  LoadedDecoder loaded(model, std::min(longest, max_seq), 64);
  Decoder& decoder = loaded.decoder;
  MetricAverager metrics;
  for (Encoded& e : encoded) {
    size_t longest_cont = 0;
    for (const auto& c : e.continuations) longest_cont = std::max(longest_cont, c.size());
    if (int64_t(longest_cont) + 1 > decoder.capacity())
      fail("{}: a choice of {} tokens does not fit --max-seq {}", path, longest_cont,
           decoder.capacity());
    size_t keep = std::min(e.context.size(), size_t(decoder.capacity()) - longest_cont);
    std::vector<int32_t> context(e.context.end() - int64_t(keep), e.context.end());
    decoder.truncate(0);
    if (context.size() > 1) decoder.next_logits({context.data(), context.size() - 1});
    int64_t shared = decoder.length();
    std::vector<double> ll;
    for (const auto& cont : e.continuations) {
      decoder.truncate(shared);
      std::vector<int32_t> inputs = {context.back()};
      inputs.insert(inputs.end(), cont.begin(), cont.end() - 1);
      double sum = 0;
      for (double lp : decoder.token_logprobs(inputs, cont)) sum += lp;
      ll.push_back(sum);
    }
    ChoicePick pick = pick_choice(ll, e.choices);
    metrics.add("acc", pick.raw == e.answer ? 1.0 : 0.0);
    metrics.add("acc_norm", pick.per_byte == e.answer ? 1.0 : 0.0);
  }
  std::string task = std::filesystem::path(path).stem().string();
  std::vector<MetricResult> results = metrics.results(task);
  double acc = results[0].value, n = double(results[0].n);
  results.push_back({task, "acc_stderr",
                     n > 1 ? std::sqrt(acc * (1 - acc) / (n - 1)) : std::nan(""), results[0].n});
  return results;
}

}  // namespace sigma
