#include "eval/aimicius.h"

#include "eval/allgather_sim.h"
#include "eval/kql.h"
#include "eval/text_metrics.h"
#include "infer/generation.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <regex>
#include <set>

namespace sigma {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

double flag(bool b) { return b ? 1.0 : 0.0; }

std::string lower_trim(const std::string& s) {
  std::string out = normalize_command(s);
  for (char& c : out) c = char(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// --- CMDGen ---------------------------------------------------------------------------------

void validate_cmdgen(const json& item) {
  string_field(item, "question");
  string_field(item, "answer");
  if (item.contains("vendor")) string_field(item, "vendor");
}

void score_cmdgen(const json& item, const GenerateFn& generate, MetricAverager& m) {
  std::string prompt = "Write the one shell command that does what the question asks.\nQuestion: " +
                       item["question"].get<std::string>() + "\nCommand:";
  std::string command = normalize_command(generate(prompt, 64, {"\n"}));
  std::string gold = normalize_command(item["answer"]);
  double exact = flag(command == gold);
  m.add("exact_match", exact);
  m.add("cmd_score", bag_cosine(words(command), words(gold)));
  if (item.contains("vendor")) m.add("exact_match_" + lower_trim(item["vendor"]), exact);
}

// --- Infrawise ------------------------------------------------------------------------------

const char* const kInfrawiseFields[] = {"Target", "Baseline", "Criterion", "Workload"};

std::string infrawise_field(const json& j, const std::string& field) {
  const json* at = &j;
  if (field == "Target" || field == "Baseline") {
    if (!j.contains("Design") || !j["Design"].is_object()) return "";
    at = &j["Design"];
  }
  return at->contains(field) && (*at)[field].is_string() ? (*at)[field].get<std::string>() : "";
}

void validate_infrawise(const json& item) {
  string_field(item, "request");
  const json& answer = object_field(item, "answer");
  for (const char* f : kInfrawiseFields)
    if (infrawise_field(answer, f).empty())
      throw ItemError{fmt::format("\"answer\" needs a non-empty string {}", f)};
  const json& candidates = array_field(item, "candidates");
  for (const json& c : candidates)
    if (!c.is_string()) throw ItemError{"every candidate must be a string"};
  for (const json& r : array_field(item, "relevant"))
    if (!r.is_number_integer() || r.get<int64_t>() < 0 || r.get<size_t>() >= candidates.size())
      throw ItemError{fmt::format("\"relevant\" holds {}, not an index of the {} candidates",
                                  r.dump(), candidates.size())};
}

void score_infrawise(const json& item, const GenerateFn& generate, MetricAverager& m) {
  const std::string& request = item["request"].get_ref<const std::string&>();
  std::string prompt =
      "Turn the request into JSON with the keys Design (Target, Baseline), "
      "Criterion and Workload.\nRequest: " +
      request + "\nJSON:";
  std::string text = generate(prompt, 128, {"\n\n"});
  json parsed;
  size_t open = text.find('{'), close = text.rfind('}');
  if (open != std::string::npos && close != std::string::npos && close > open)
    parsed = json::parse(text.substr(open, close - open + 1), nullptr, false);
  if (!parsed.is_object()) parsed = json::object();
  bool all = true;
  for (const char* f : kInfrawiseFields) {
    bool same =
        lower_trim(infrawise_field(parsed, f)) == lower_trim(infrawise_field(item["answer"], f));
    all = all && same;
    m.add(fmt::format("{}_match", lower_trim(f)), flag(same));
  }
  m.add("all_fields", flag(all));
  std::string listing = "Request: " + request + "\nBenchmark results:\n";
  const json& candidates = item["candidates"];
  for (size_t i = 0; i < candidates.size(); ++i)
    listing += fmt::format("[{}] {}\n", i + 1, candidates[i].get<std::string>());
  std::string picked =
      generate(listing + "Numbers of the results that answer the request:", 32, {"\n"});
  std::set<int64_t> chosen, relevant;
  static const std::regex number(R"(\d+)");
  for (auto it = std::sregex_iterator(picked.begin(), picked.end(), number);
       it != std::sregex_iterator(); ++it)
    chosen.insert(std::stoll(it->str()) - 1);
  for (const json& r : item["relevant"]) relevant.insert(r.get<int64_t>());
  m.add("result_accuracy", flag(chosen == relevant));
}

// --- Optiflow -------------------------------------------------------------------------------

Topology topology_of(const json& item) {
  Topology t;
  t.gpus = item["gpus"];
  t.latency_us = item["latency_us"].get<std::vector<std::vector<double>>>();
  t.bandwidth_gbps = item["bandwidth_gbps"].get<std::vector<std::vector<double>>>();
  t.chunk_bytes = item["chunk_bytes"];
  return t;
}

void validate_optiflow(const json& item) {
  int64_t n = int_field(item, "gpus");
  if (n < 2 || n > 64) throw ItemError{"\"gpus\" must be 2 .. 64"};
  for (const char* key : {"latency_us", "bandwidth_gbps"}) {
    const json& rows = array_field(item, key);
    bool square = int64_t(rows.size()) == n;
    for (const json& row : rows) {
      square = square && row.is_array() && int64_t(row.size()) == n;
      if (square)
        for (const json& x : row) square = square && x.is_number() && x.get<double>() >= 0;
    }
    if (!square)
      throw ItemError{fmt::format("\"{}\" must be a {} x {} matrix of numbers >= 0", key, n, n)};
  }
  if (!item.contains("chunk_bytes") || !item["chunk_bytes"].is_number() ||
      item["chunk_bytes"].get<double>() <= 0)
    throw ItemError{"\"chunk_bytes\" must be a number > 0"};
  if (item.contains("template")) string_field(item, "template");
}

std::string matrix_text(const json& rows) {
  std::string out;
  for (const json& row : rows) out += row.dump() + "\n";
  return out;
}

void score_optiflow(const json& item, const GenerateFn& generate, MetricAverager& m) {
  Topology topo = topology_of(item);
  std::string prompt = fmt::format(
      "Write Python that sets `plan` to an all-gather schedule for {} GPUs. GPU i starts with "
      "chunk i ({} bytes). plan is a list of steps; a step is a list of (src, dst, chunk) "
      "transfers that run at the same time.\nLatency (us):\n{}Bandwidth (GB/s):\n{}{}```python\n",
      topo.gpus, topo.chunk_bytes, matrix_text(item["latency_us"]),
      matrix_text(item["bandwidth_gbps"]), item.value("template", ""));
  auto judge = [&](const std::string& code, bool* detected) {
    static const std::regex python(R"((^|\n)[ \t]*(def |import |from \w+ import|plan\s*=))");
    *detected = std::regex_search(code, python);
    std::string error;
    std::optional<Plan> plan = parse_plan(code, &error);
    return plan ? simulate(topo, *plan) : Simulation{false, error, 0};
  };
  std::string first = generate(prompt, 256, {"```"});
  bool detected = false;
  Simulation sim1 = judge(first, &detected);
  std::string feedback = sim1.valid ? fmt::format("takes {:.2f} us", sim1.time_us)
                                    : "is not a valid all-gather (" + sim1.error + ")";
  std::string second = generate(prompt + first + "```\nIn simulation that plan " + feedback +
                                    ". Write a faster plan.\n```python\n",
                                256, {"```"});
  bool detected2 = false;
  Simulation sim2 = judge(second, &detected2);
  m.add("code_detected", flag(detected));
  m.add("plan_valid", flag(sim1.valid));
  // Improved: the second plan is valid and faster (or valid where the first was not).
  m.add("plan_improved", flag(sim2.valid && (!sim1.valid || sim2.time_us < sim1.time_us)));
}

// --- NL2KQL ---------------------------------------------------------------------------------

void validate_nl2kql(const json& item) {
  string_field(item, "question");
  const std::string& answer = string_field(item, "answer");
  if (std::string error = kql::syntax_error(answer); !error.empty())
    throw ItemError{"the gold \"answer\" fails the KQL syntax check: " + error};
  if (item.contains("schema")) string_field(item, "schema");
}

void score_nl2kql(const json& item, const GenerateFn& generate, MetricAverager& m) {
  std::string prompt = "Write a Kusto (KQL) query that answers the question.\n";
  if (item.contains("schema")) prompt += "Schema: " + item["schema"].get<std::string>() + "\n";
  prompt += "Question: " + item["question"].get<std::string>() + "\nKQL:";
  std::string query = normalize_command(code_block(generate(prompt, 128, {"\n\n"})));
  std::string gold = item["answer"];
  m.add("syntax", flag(kql::syntax_error(query).empty()));
  m.add("jaccard", jaccard(kql::similarity_tokens(query), kql::similarity_tokens(gold)));
  kql::Entities got = kql::entities(query), want = kql::entities(gold);
  m.add("cluster_recall", recall(got.clusters, want.clusters));
  m.add("database_recall", recall(got.databases, want.databases));
  m.add("table_recall", recall(got.tables, want.tables));
  m.add("column_recall", recall(got.columns, want.columns));
}

// Where the sample task files are: ./eval/tasks, else beside the binary's source tree.
fs::path samples_dir() {
  if (fs::is_directory("eval/tasks")) return "eval/tasks";
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  for (fs::path dir = exe.parent_path(); !ec && !dir.empty() && dir != dir.root_path();
       dir = dir.parent_path())
    if (fs::is_directory(dir / "eval/tasks")) return dir / "eval/tasks";
  fail("no --data given and no eval/tasks/ sample directory found (run from the repository)");
}

}  // namespace

const std::vector<AimiciusTask>& aimicius_tasks() {
  static const std::vector<AimiciusTask> tasks = {
      {"cmdgen", validate_cmdgen, score_cmdgen},
      {"infrawise", validate_infrawise, score_infrawise},
      {"optiflow", validate_optiflow, score_optiflow},
      {"nl2kql", validate_nl2kql, score_nl2kql}};
  return tasks;
}

const AimiciusTask& aimicius_task(const std::string& name) {
  for (const AimiciusTask& t : aimicius_tasks())
    if (name == t.name) return t;
  fail("--bench aimicius:{}: unknown task; allowed: cmdgen, infrawise, optiflow, nl2kql", name);
}

std::vector<MetricResult> evaluate_aimicius(TrainedModel& model, const AimiciusOptions& options) {
  std::vector<const AimiciusTask*> tasks;
  if (options.task.empty())
    for (const AimiciusTask& t : aimicius_tasks()) tasks.push_back(&t);
  else
    tasks.push_back(&aimicius_task(options.task));
  fs::path data = options.data.empty() ? samples_dir() : fs::path(options.data);
  if (!fs::exists(data)) fail("--data {}: no such file or directory", data.string());
  if (!fs::is_directory(data) && tasks.size() > 1)
    fail("--data {}: a file holds one task; name it (--bench aimicius:TASK) or pass a directory",
         data.string());
  // Read and check every file before the first generation.
  std::vector<std::vector<TaskItem>> items;
  for (const AimiciusTask* t : tasks) {
    fs::path file = fs::is_directory(data) ? data / (std::string(t->name) + ".jsonl") : data;
    items.push_back(read_task_file(file.string(), options.limit, t->validate));
  }
  LoadedDecoder loaded(model, options.max_seq, 64);
  GenerationConfig config;  // greedy
  GenerateFn generate = [&](const std::string& prompt, int64_t max_new,
                            const std::vector<std::string>& stop) {
    int64_t prompt_tokens = int64_t(model.tokenizer().encode(prompt).size());
    int64_t room = options.max_seq - prompt_tokens;
    if (room < 1)
      fail("a prompt of {} tokens does not fit --max-seq {}", prompt_tokens, options.max_seq);
    config.max_new_tokens = std::min({max_new, options.max_new_tokens, room});
    config.stop = stop;
    return sigma::generate(loaded.decoder, model.tokenizer(), prompt, config).text;
  };
  std::vector<MetricResult> results;
  for (size_t i = 0; i < tasks.size(); ++i) {
    MetricAverager metrics;
    for (const TaskItem& item : items[i]) tasks[i]->score(item.json, generate, metrics);
    for (MetricResult& r : metrics.results(std::string("aimicius:") + tasks[i]->name))
      results.push_back(r);
  }
  return results;
}

}  // namespace sigma
