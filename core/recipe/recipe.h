// Recipe: the typed, validated configuration of a run, read from TOML.
//
// Loading resolves `include = "other.toml"` (relative to the including file; its keys
// win, tables merge key by key, arrays are replaced), applies `--set section.key=value`
// overrides in order (the value is read as TOML, else as a bare string), checks every key
// against the key tables (type, range, allowed values; an unknown key names the nearest
// valid one), runs each section's cross-field checks, fills in the defaults that depend on
// other keys, and keeps the resolved TOML text for the run directory and checkpoints.
// The key tables live beside the structs; core/recipe/sections.h lists them.
#pragma once

#include "core/checkpoint/config.h"
#include "core/data/config.h"
#include "core/dist/config.h"
#include "core/optim/config.h"
#include "core/train/config.h"
#include "core/train/guard_config.h"
#include "models/config.h"

#include <string>
#include <vector>

namespace sigma {

struct Recipe {
  RunConfig run;
  ModelConfig model;
  DataConfig data;
  TrainConfig train;
  OptimizerConfig optimizer;
  LrSchedulerConfig lr_scheduler;
  CheckpointConfig checkpoint;
  EvalConfig eval;
  LogConfig log;
  GuardConfig guard;
  ParallelismConfig parallelism;

  std::string source_path;    // the recipe file given on the command line
  // The merged recipe with overrides and every key filled in (no `include`), as TOML text:
  // parse_recipe(resolved_toml, ...) gives back the same sections.
  std::string resolved_toml;
};

// Reads, merges, overrides and validates. Any problem throws UserError with one line:
// "<file>:<line>: <key>: <what is wrong>; <what is allowed>".
Recipe load_recipe(const std::string& path, const std::vector<std::string>& overrides = {});
// The same from TOML text (tests; `include` resolves against `base_dir`).
Recipe parse_recipe(const std::string& toml_text, const std::string& name,
                    const std::vector<std::string>& overrides = {},
                    const std::string& base_dir = ".");

// What training needs beyond a valid recipe: at least one data source. Parsing allows an
// empty data.sources, since `sigma info` and conversions need no data; the trainer calls
// this before it opens anything.
void validate_for_training(const Recipe& recipe);

// The key reference in Markdown (every key: type, default, range/allowed, doc), generated
// from the same table the parser uses.
std::string recipe_key_reference();

// `readme` with the text between its "<!-- keys:begin -->" and "<!-- keys:end -->" lines
// replaced by recipe_key_reference(): how recipes/README.md is regenerated, and what the
// test compares it with.
std::string with_key_reference(const std::string& readme);

}  // namespace sigma
