// Recipe loading: read the file and what it includes, merge, apply --set, then read every
// section through its key table, run the cross-field checks and write the resolved TOML.
// Also renders the key reference. Leaves out: the keys themselves (core/recipe/sections.h).
#include "core/recipe/recipe.h"

#include "core/error.h"
#include "core/recipe/sections.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>

namespace sigma {

namespace fs = std::filesystem;

namespace {

constexpr const char* kKeysBegin = "<!-- keys:begin -->\n";
constexpr const char* kKeysEnd = "<!-- keys:end -->";
constexpr size_t kMaxRecipeBytes = size_t(16) << 20;

// The whole recipe is one section whose nested sections are the recipe's sections.
const schema::Section<Recipe>& recipe_schema() {
  static const schema::Section<Recipe> schema =
      schema::Section<Recipe>("")
          .table("run", &Recipe::run, run_section())
          .table("model", &Recipe::model, model_section())
          .table("data", &Recipe::data, data_section())
          .table("train", &Recipe::train, train_section())
          .table("optimizer", &Recipe::optimizer, optimizer_section())
          .table("lr_scheduler", &Recipe::lr_scheduler, lr_scheduler_section())
          .table("checkpoint", &Recipe::checkpoint, checkpoint_section())
          .table("eval", &Recipe::eval, eval_section())
          .table("log", &Recipe::log, log_section())
          .table("guard", &Recipe::guard, guard_section())
          .table("parallelism", &Recipe::parallelism, parallelism_section());
  return schema;
}

const std::vector<std::string>& all_keys() {
  static const std::vector<std::string> keys = [] {
    std::vector<std::string> out;
    recipe_schema().collect_keys("", out);
    return out;
  }();
  return keys;
}

// The file's text, or an error naming it (at `origin`, when an include asked for it).
std::string read_text(const fs::path& path, const std::string& shown, const std::string& origin) {
  std::error_code error;
  fs::file_status status = fs::status(path, error);
  std::string problem;
  if (status.type() == fs::file_type::not_found) problem = "no such file";
  else if (error) problem = error.message();
  else if (fs::is_directory(status)) problem = "is a directory, not a recipe file";
  std::ifstream in(path);
  if (problem.empty() && !in) problem = "cannot be opened";
  if (!problem.empty()) {
    if (origin.empty()) fail("{}: cannot read the recipe: {}", shown, problem);
    schema::fail_at(origin, "include", fmt::format("cannot read {}: {}", shown, problem));
  }
  // Read at most kMaxRecipeBytes (+1 to notice more): a path like /dev/zero would otherwise be
  // read forever (the recipe fuzzer's finding); pipes such as <(...) still work.
  std::string text(kMaxRecipeBytes + 1, '\0');
  in.read(text.data(), std::streamsize(text.size()));
  text.resize(size_t(in.gcount()));
  if (text.size() > kMaxRecipeBytes) {
    std::string problem = fmt::format("longer than {} MiB; not a recipe", kMaxRecipeBytes >> 20);
    if (origin.empty()) fail("{}: cannot read the recipe: {}", shown, problem);
    schema::fail_at(origin, "include", fmt::format("cannot read {}: {}", shown, problem));
  }
  return text;
}

toml::table parse_toml(const std::string& text, const std::string& shown) {
  try {
    return toml::parse(text, std::string_view(shown));
  } catch (const toml::parse_error& e) {
    fail("{}:{}: TOML syntax error: {}", shown, e.source().begin.line, e.description());
  }
}

// Deep merge: tables merge key by key, anything else (arrays too) is replaced. Nodes are
// moved, never copied, because toml++ drops the source (file:line) of a copied node.
void merge_into(toml::table& base, toml::table&& overlay) {
  for (auto&& [key, node] : overlay) {
    toml::node* existing = base.get(key.str());
    if (existing && existing->is_table() && node.is_table())
      merge_into(*existing->as_table(), std::move(*node.as_table()));
    else
      base.insert_or_assign(key, std::move(node));
  }
}

// The identity of a recipe file for cycle detection: its canonical path where it can be
// resolved (error_code: a path we cannot resolve is reported when it is read, not here).
std::string file_id(const fs::path& path) {
  std::error_code error;
  fs::path canonical = fs::weakly_canonical(path, error);
  return (error ? path.lexically_normal() : canonical).string();
}

// The recipes being included, outermost first, to report a cycle.
struct IncludeChain {
  std::vector<std::string> ids;    // canonical paths
  std::vector<std::string> shown;  // as the user would write them
};

// `table` (read from `shown`, whose includes resolve against `dir`) merged over what it
// includes, recursively.
toml::table with_includes(toml::table table, const std::string& shown, const fs::path& dir,
                          IncludeChain& chain) {
  toml::node* include = table.get("include");
  if (!include) return table;
  std::string origin = schema::origin_of(include, shown);
  if (!include->is_string())
    schema::fail_at(origin, "include", "expected a string (a recipe path relative to this file)");
  fs::path target = (dir / **include->as_string()).lexically_normal();
  std::string id = file_id(target);
  std::string target_shown = target.string();
  auto seen = std::find(chain.ids.begin(), chain.ids.end(), id);
  if (seen != chain.ids.end()) {
    std::string cycle;
    for (auto it = chain.shown.begin() + (seen - chain.ids.begin()); it != chain.shown.end(); ++it)
      cycle += *it + " -> ";
    schema::fail_at(origin, "include", "cycle " + cycle + target_shown);
  }
  toml::table base = parse_toml(read_text(target, target_shown, origin), target_shown);
  chain.ids.push_back(id);
  chain.shown.push_back(target_shown);
  base = with_includes(std::move(base), target_shown, target.parent_path(), chain);
  chain.ids.pop_back();
  chain.shown.pop_back();
  table.erase("include");
  merge_into(base, std::move(table));
  return base;
}

// `--set section.key=value`: the value is read as TOML (20, 1e-3, true, [{ path = "x" }]),
// and as a bare string when it is not TOML (cosine, runs/x). It is merged like an include's
// overlay, and its nodes carry the argument as their source, so errors name it.
void apply_override(toml::table& merged, const std::string& argument) {
  std::string origin = "--set " + argument;
  static const std::regex kDottedKey(R"([A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)+)");
  size_t equals = argument.find('=');
  std::string key = argument.substr(0, equals);
  if (equals == std::string::npos || !std::regex_match(key, kDottedKey))
    fail("{}: expected section.key=value, e.g. train.steps=20", origin);
  std::string value = argument.substr(equals + 1);
  std::string_view source(origin);
  toml::table overlay;
  bool parsed = false;
  if (value.find_first_of("\r\n") == std::string::npos) {
    try {
      overlay = toml::parse(key + " = " + value, source);
      parsed = true;
    } catch (const toml::parse_error&) {
    }
  }
  if (!parsed) overlay = toml::parse(key + " = " + schema::string_text(value), source);
  merge_into(merged, std::move(overlay));
}

// Writes the resolved recipe: every section, every key, in the key tables' order.
std::string resolved_text(const Recipe& recipe) {
  std::string text =
      "# Resolved recipe: includes merged, --set overrides applied, every key filled in.\n\n";
  recipe_schema().write(recipe, "", text);
  text.pop_back();  // the blank line after the last section
  return text;
}

Recipe build(toml::table merged, const std::string& source_path,
             const std::vector<std::string>& overrides) {
  for (const std::string& argument : overrides) apply_override(merged, argument);
  Recipe recipe;
  recipe.source_path = source_path;
  schema::ReadContext context{source_path, all_keys()};
  recipe_schema().read(merged, "", context, recipe);

  schema::Checker check(merged, source_path);
  check_model(recipe.model, check);
  check_data(recipe.data, recipe.model, check);
  resolve_train(recipe.train, recipe.data, check);
  check_lr_scheduler(recipe.lr_scheduler, check);
  resolve_run(recipe.run, check);
  resolve_checkpoint(recipe.checkpoint, recipe.run);
  check_parallelism(recipe.parallelism, recipe.model, check);
  recipe.resolved_toml = resolved_text(recipe);
  return recipe;
}

std::string markdown_cell(std::string text) {
  std::replace(text.begin(), text.end(), '\n', ' ');
  std::string escaped;
  for (char c : text) escaped += c == '|' ? std::string("\\|") : std::string(1, c);
  return escaped;
}

}  // namespace

Recipe load_recipe(const std::string& path, const std::vector<std::string>& overrides) {
  toml::table table = parse_toml(read_text(path, path, ""), path);
  IncludeChain chain{{file_id(path)}, {path}};
  return build(with_includes(std::move(table), path, fs::path(path).parent_path(), chain), path,
               overrides);
}

Recipe parse_recipe(const std::string& toml_text, const std::string& name,
                    const std::vector<std::string>& overrides, const std::string& base_dir) {
  toml::table table = parse_toml(toml_text, name);
  IncludeChain chain{{file_id(fs::path(base_dir) / name)}, {name}};
  return build(with_includes(std::move(table), name, base_dir, chain), name, overrides);
}

void validate_for_training(const Recipe& recipe) {
  if (recipe.data.sources.empty())
    fail("{}: data.sources: empty; training needs at least one source, e.g. "
         "--set 'data.sources=[{{path=\"data/mine\",weight=1.0}}]'",
         recipe.source_path);
}

std::string recipe_key_reference() {
  std::vector<schema::TableDoc> tables;
  recipe_schema().describe("", false, tables);
  std::string text =
      "Generated from the key tables in the code by `sigma info --keys`; do not edit by hand.\n";
  for (const schema::TableDoc& table : tables) {
    std::string title = table.array_item ? "[[" + table.name + "]]" : "[" + table.name + "]";
    text += fmt::format("\n### `{}`\n\n{}\n\n", title, table.doc);
    text += "| key | type | default | allowed | meaning |\n|---|---|---|---|---|\n";
    for (const schema::KeyDoc& key : table.keys)
      text += fmt::format("| `{}` | {} | `{}` | {} | {} |\n", key.name, markdown_cell(key.type),
                          markdown_cell(key.default_text), markdown_cell(key.allowed),
                          markdown_cell(key.doc));
  }
  return text;
}

std::string with_key_reference(const std::string& readme) {
  size_t begin = readme.find(kKeysBegin);
  size_t end = readme.find(kKeysEnd);
  if (begin == std::string::npos || end == std::string::npos || end < begin)
    fail("the README has no \"{}\" ... \"{}\" markers around the key reference",
         std::string(kKeysBegin, std::strlen(kKeysBegin) - 1), kKeysEnd);
  begin += std::strlen(kKeysBegin);
  return readme.substr(0, begin) + recipe_key_reference() + readme.substr(end);
}

}  // namespace sigma
