// The benchmark scorers: text metrics, the KQL checker, the all-gather simulator, the
// multiple-choice conventions, and each AIMicius task scored on its sample set with the gold
// answers (every metric 1) and with wrong answers (below 1).
#include "core/data/tokenizer.h"
#include "eval/aimicius.h"
#include "eval/allgather_sim.h"
#include "eval/kql.h"
#include "eval/multiple_choice.h"
#include "eval/text_metrics.h"

#include <doctest/doctest.h>

#include <filesystem>

using namespace sigma;
using nlohmann::json;

namespace {

std::string sample(const std::string& task) {
  return (std::filesystem::path(__FILE__).parent_path().parent_path() / "eval/tasks" /
          (task + ".jsonl"))
      .string();
}

// A plan in which every GPU sends its own chunk to every other GPU in one step.
Plan direct_plan(int64_t gpus) {
  Plan plan(1);
  for (int64_t s = 0; s < gpus; ++s)
    for (int64_t d = 0; d < gpus; ++d)
      if (s != d) plan[0].push_back({s, d, s});
  return plan;
}

// What a perfect model answers to each task's prompts.
std::string oracle(const json& item, const std::string& prompt) {
  std::string answer = " ";  // appended to, not concatenated: GCC 12 warns falsely on + here
  if (item.contains("question") && item["answer"].is_string())
    return answer.append(item["answer"].get<std::string>());
  if (item.contains("request")) {
    if (prompt.ends_with("JSON:")) return answer.append(item["answer"].dump());
    for (const json& r : item["relevant"])
      answer.append(std::to_string(r.get<int>() + 1)).append(" ");
    return answer;
  }
  int64_t gpus = item["gpus"];
  bool second = prompt.find("Write a faster plan") != std::string::npos;
  return plan_literal(second ? direct_plan(gpus) : ring_plan(gpus)).append("\n");
}

std::vector<MetricResult> score_sample(const AimiciusTask& task, bool right) {
  MetricAverager metrics;
  for (const TaskItem& item : read_task_file(sample(task.name), 0, task.validate)) {
    GenerateFn generate = [&](const std::string& prompt, int64_t, const std::vector<std::string>&) {
      return right ? oracle(item.json, prompt) : std::string(" ls -l | where");
    };
    task.score(item.json, generate, metrics);
  }
  return metrics.results(task.name);
}

}  // namespace

TEST_CASE("eval: command and token metrics") {
  CHECK(normalize_command("  `nvidia-smi   -L` ") == "nvidia-smi -L");
  CHECK(normalize_command("```rocm-smi```") == "rocm-smi");
  CHECK(bag_cosine(words("a b b"), words("a b b")) == doctest::Approx(1.0));
  CHECK(bag_cosine(words("a"), words("b")) == 0.0);
  CHECK(bag_cosine(words("a b"), words("a c")) == doctest::Approx(0.5));
  CHECK(jaccard(words("a b c"), words("b c d")) == doctest::Approx(0.5));
  CHECK(recall(words("x y"), words("x z")) == doctest::Approx(0.5));
  CHECK(std::isnan(recall(words("x"), {})));
  CHECK(code_block("Here:\n```python\nplan = []\n```\nok") == "plan = []\n");
}

TEST_CASE("eval: the KQL subset accepts the sample answers and rejects broken queries") {
  for (const TaskItem& item : read_task_file(sample("nl2kql"), 0, aimicius_task("nl2kql").validate))
    CHECK(kql::syntax_error(item.json["answer"]) == "");
  for (const char* bad :
       {"T | where", "T | take x", "T | frobnicate x", "T |", "T | where a == 'b", "T | top 5 Col",
        "cluster('c').T | count", "T | where (a > 1", "", "T | join (U) Key", "T | sort Col"})
    CHECK_MESSAGE(kql::syntax_error(bad) != "", bad);
  CHECK(kql::syntax_error("T | mv-expand Tags | project-away X | count") == "");
  kql::Entities e = kql::entities(
      "cluster('infra').database('Jobs').JobEvents | where State == 'Failed' and GpuCount > 8 | "
      "join kind=inner (Nodes | where Healthy == false) on Node | summarize n = count() by Node");
  CHECK(e.clusters == std::vector<std::string>{"infra"});
  CHECK(e.databases == std::vector<std::string>{"Jobs"});
  CHECK(e.tables == std::vector<std::string>{"JobEvents", "Nodes"});
  CHECK(e.columns == std::vector<std::string>{"State", "GpuCount", "Healthy", "Node", "n"});
}

TEST_CASE("eval: the all-gather simulator times valid plans and rejects invalid ones") {
  Topology topo;
  topo.gpus = 4;
  topo.latency_us.assign(4, std::vector<double>(4, 2.0));
  topo.bandwidth_gbps.assign(4, std::vector<double>(4, 100.0));
  topo.chunk_bytes = 1e8;  // 1000 us per transfer at 100 GB/s
  Simulation ring = simulate(topo, ring_plan(4));
  CHECK(ring.valid);
  CHECK(ring.time_us == doctest::Approx(3 * 1002.0));
  Simulation direct = simulate(topo, direct_plan(4));
  CHECK(direct.valid);
  CHECK(direct.time_us == doctest::Approx(1002.0));
  // Two transfers on one link share it.
  Plan shared = {{{0, 1, 0}, {2, 3, 2}}, {{0, 1, 0}}};
  std::optional<Plan> parsed =
      parse_plan("x = 1\nplan = " + plan_literal(direct_plan(4)).substr(7), nullptr);
  REQUIRE(parsed);
  CHECK(simulate(topo, *parsed).time_us == doctest::Approx(1002.0));
  Plan not_held = {{{0, 1, 2}}};
  CHECK(simulate(topo, not_held).error.find("does not hold") != std::string::npos);
  CHECK(simulate(topo, {{{1, 1, 1}}}).error.find("itself") != std::string::npos);
  CHECK(simulate(topo, shared).error.find("never receives") != std::string::npos);
  CHECK_FALSE(parse_plan("plan = [[(0, 1)]]", nullptr));
  CHECK_FALSE(parse_plan("print(42)", nullptr));
  Plan two_on_one_link = direct_plan(4);
  two_on_one_link.push_back({{1, 0, 1}, {1, 0, 2}});
  CHECK(simulate(topo, two_on_one_link).time_us == doctest::Approx(1002.0 + 2 + 2 * 1000.0));
}

TEST_CASE("eval: multiple-choice requests and picks follow lm-evaluation-harness") {
  std::unique_ptr<Tokenizer> bytes = make_tokenizer("byte");
  ChoiceRequest r = encode_choice(*bytes, "Answer: ", "yes");
  // The context's trailing space moves to the continuation.
  CHECK(r.context.size() == 7);
  CHECK(r.continuation == std::vector<int32_t>{' ', 'y', 'e', 's'});
  CHECK(encode_choice(*bytes, "", "a").context == std::vector<int32_t>{bytes->eos_id()});
  // Raw log-likelihood prefers the short choice; per byte the long one.
  ChoicePick pick = pick_choice({-2.0, -3.0}, {"a", "abcdef"});
  CHECK(pick.raw == 0);
  CHECK(pick.per_byte == 1);
  CHECK(pick_choice({-1.0, -1.0}, {"x", "y"}).raw == 0);  // ties: the first
  CHECK_THROWS_AS(read_task_file(sample("cmdgen"), 0, validate_choice_item), UserError);
}

TEST_CASE("eval: each AIMicius task scores 1 on gold answers and less on wrong ones") {
  for (const AimiciusTask& task : aimicius_tasks()) {
    CAPTURE(task.name);
    for (const MetricResult& m : score_sample(task, true)) {
      CAPTURE(m.metric);
      CHECK(m.value == doctest::Approx(1.0));
    }
    double wrong = 0;
    for (const MetricResult& m : score_sample(task, false)) wrong += m.value;
    CHECK(wrong < 0.5);
  }
}
