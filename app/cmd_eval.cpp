// sigma eval CKPT --bench ppl|mc|aimicius[:task] [--data PATH] [--limit N] [--out results.json]
//   [--device auto|cpu|cuda]
#include "app/commands.h"
#include "eval/aimicius.h"
#include "eval/multiple_choice.h"
#include "eval/perplexity.h"
#include "kernels/threads.h"

#include <fmt/format.h>

#include <memory>

namespace sigma::app {

namespace {

struct EvalArgs {
  std::string checkpoint, bench, data, out, device = "auto";
  int64_t limit = 0, max_seq = 4096, max_new_tokens = 256, threads = 0;
};

void run_eval(const EvalArgs& args) {
  std::string bench = args.bench, task;
  if (size_t colon = bench.find(':'); colon != std::string::npos) {
    task = bench.substr(colon + 1);
    bench = bench.substr(0, colon);
  }
  if (bench != "ppl" && bench != "mc" && bench != "aimicius")
    fail(
        "--bench {}: unknown bench; allowed: ppl, mc, aimicius, aimicius:TASK "
        "(cmdgen, infrawise, optiflow, nl2kql)",
        args.bench);
  if (bench != "aimicius" && !task.empty()) fail("--bench {}: only aimicius has tasks", args.bench);
  if (bench == "aimicius" && !task.empty()) aimicius_task(task);  // an unknown task fails here
  if (bench == "mc" && args.data.empty()) fail("--bench mc needs --data FILE.jsonl");
  TrainedModel model(args.checkpoint, inference_device(args.device));
  set_cpu_threads(int(args.threads > 0 ? args.threads : model.recipe().train.threads));
  EvalReport report{model.checkpoint_dir(), args.bench, model.step(), {}};
  if (bench == "ppl") {
    report.results = evaluate_perplexity(model, args.data, args.limit);
  } else if (bench == "mc") {
    report.results = evaluate_multiple_choice(model, args.data, args.limit, args.max_seq);
  } else {
    report.results =
        evaluate_aimicius(model, {task, args.data, args.limit, args.max_seq, args.max_new_tokens});
  }
  fmt::print("{}", format_table(report));
  if (!args.out.empty()) {
    write_json(report, args.out);
    fmt::print("results written to {}\n", args.out);
  }
}

}  // namespace

void add_eval_command(CLI::App& app) {
  auto args = std::make_shared<EvalArgs>();
  CLI::App* cmd = app.add_subcommand("eval", "Evaluate a trained checkpoint on a benchmark");
  cmd->add_option("checkpoint", args->checkpoint,
                  "A committed step directory, a checkpoints directory or a run directory")
      ->required();
  cmd->add_option("--bench", args->bench, "ppl, mc, aimicius or aimicius:TASK")->required();
  cmd->add_option("--data", args->data,
                  "ppl: a dataset PREFIX (default: the run's validation split); mc: a JSONL file; "
                  "aimicius: a JSONL file or a directory of TASK.jsonl (default: eval/tasks)");
  cmd->add_option("--limit", args->limit, "At most N items per task (ppl: N sequences)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--out", args->out, "Write the results as JSON here");
  cmd->add_option("--max-seq", args->max_seq,
                  "Longest prompt + output (mc, aimicius; default 4096)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--max-new-tokens", args->max_new_tokens,
                  "Cap on generated tokens per answer (aimicius; default 256)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--threads", args->threads, "CPU threads; 0 = the recipe's train.threads");
  cmd->add_option("--device", args->device, "auto (CUDA when there is a GPU), cpu or cuda")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  cmd->callback([args] { run_eval(*args); });
}

}  // namespace sigma::app
