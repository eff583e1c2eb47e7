// `sigma eval --bench aimicius[:task]`: the four system-domain tasks of the AIMicius benchmark
// (SIGMA paper arXiv 2512.13488; SIGMA-FAMILY.md section 4), with their metrics, on task files
// in the JSONL formats of eval/tasks/README.md. The official data is not public: the
// repository ships small sample sets we wrote (eval/tasks/*.jsonl) and a generator of
// CMDGen-style items from the machine's man pages (scripts/cmdgen-from-man).
//
//   cmdgen     question -> one shell command: exact match (whitespace-normalised), and a
//              token-level cosine in place of the paper's embedding score; per vendor too
//   infrawise  request -> {"Design": {"Target", "Baseline"}, "Criterion", "Workload"}: each
//              field's exact match and all four; then the matching benchmark-result lines
//              among the candidates: right when exactly the relevant ones are picked
//   optiflow   latency/bandwidth matrices -> Python that sets an all-gather `plan`, then a
//              second, faster one given the first one's simulated time: code detected, plan
//              valid, plan improved (eval/allgather_sim.h; generated code is never run)
//   nl2kql     question -> Kusto query: syntax (eval/kql.h), Jaccard similarity of tokens,
//              cluster / database / table / column recall
// Generation is greedy; each task's prompt is in aimicius.cpp beside its scorer.
#pragma once

#include "eval/results.h"
#include "eval/task_file.h"
#include "infer/trained_model.h"

#include <functional>
#include <nlohmann/json.hpp>

namespace sigma {

// Text for a prompt, until one of `stop` or `max_new_tokens`.
using GenerateFn = std::function<std::string(const std::string& prompt, int64_t max_new_tokens,
                                             const std::vector<std::string>& stop)>;

struct AimiciusTask {
  const char* name;
  void (*validate)(const nlohmann::json& item);  // throws ItemError
  // Runs the item's prompts through `generate` and adds its metric values.
  void (*score)(const nlohmann::json& item, const GenerateFn& generate, MetricAverager& metrics);
};

const std::vector<AimiciusTask>& aimicius_tasks();
// The task of that name; a UserError listing the names otherwise.
const AimiciusTask& aimicius_task(const std::string& name);

struct AimiciusOptions {
  std::string task;   // "" = all four
  std::string data;   // a task file (one task), or a directory of <task>.jsonl; "" = samples
  int64_t limit = 0;  // items per task; 0 = all
  int64_t max_seq = 4096;
  int64_t max_new_tokens = 256;
};
std::vector<MetricResult> evaluate_aimicius(TrainedModel& model, const AimiciusOptions& options);

}  // namespace sigma
