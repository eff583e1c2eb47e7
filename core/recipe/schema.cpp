// The non-template half of the key tables: value checks, error wording, origins and the
// "did you mean" search. Leaves out: the key tables themselves (beside each struct).
#include "core/recipe/schema.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <sstream>

namespace sigma::schema {

namespace {

std::string number_text(double value) { return fmt::format("{}", value); }

// What a value is, for "expected X, got Y".
std::string describe(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::string: return "string " + string_text(**node.as_string());
    case toml::node_type::integer: return "integer " + integer_text(**node.as_integer());
    case toml::node_type::floating_point: return "float " + float_text(**node.as_floating_point());
    case toml::node_type::boolean: return **node.as_boolean() ? "boolean true" : "boolean false";
    case toml::node_type::table: return "a table";
    case toml::node_type::array: return "an array";
    default: return "a date or time";
  }
}

std::string leaf_of(const std::string& key) {
  size_t dot = key.rfind('.');
  return dot == std::string::npos ? key : key.substr(dot + 1);
}

// Edit distance where swapping two neighbours counts as one edit (optimal string
// alignment), since "stpes" for "steps" is the typo people make.
size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i)
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  return d[a.size()][b.size()];
}

// `typed` drops letters of `candidate` but keeps its first one and the order ("attn").
bool abbreviates(const std::string& typed, const std::string& candidate) {
  if (typed.size() < 3 || typed[0] != candidate[0]) return false;
  size_t next = 0;
  for (char c : candidate)
    if (next < typed.size() && typed[next] == c) ++next;
  return next == typed.size();
}

// Close enough to be the intended word: a few edits, a prefix either way ("training" for
// "train", "optim" for "optimizer"), or an abbreviation.
bool resembles(const std::string& typed, const std::string& candidate) {
  size_t shorter = std::min(typed.size(), candidate.size());
  if (shorter >= 3 && (typed.rfind(candidate, 0) == 0 || candidate.rfind(typed, 0) == 0))
    return true;
  return abbreviates(typed, candidate) ||
         edit_distance(typed, candidate) <= std::max<size_t>(2, typed.size() / 3);
}

// The candidate nearest to `typed` (compared through `project`) if it resembles it.
template <typename Project>
const std::string* nearest(const std::string& typed, const std::vector<std::string>& candidates,
                           Project project) {
  const std::string* best = nullptr;
  size_t best_distance = 0;
  for (const std::string& candidate : candidates) {
    std::string text = project(candidate);
    if (!resembles(typed, text)) continue;
    size_t distance = edit_distance(typed, text);
    if (!best || distance < best_distance) best = &candidate, best_distance = distance;
  }
  return best;
}

// "did you mean X?": a sibling with a similar name, else the same name in another
// section (seq_len under [train] is data.seq_len), else a similar dotted key anywhere;
// failing all three, the list of what the table allows.
std::string suggestion(const std::string& key, const std::vector<std::string>& siblings,
                       const std::vector<std::string>& all_keys) {
  std::string leaf = leaf_of(key);
  if (const std::string* s = nearest(leaf, siblings, leaf_of)) return "did you mean " + *s + "?";
  for (const std::string& candidate : all_keys)
    if (leaf_of(candidate) == leaf && candidate != key) return "did you mean " + candidate + "?";
  if (const std::string* s = nearest(key, all_keys, [](const std::string& c) { return c; }))
    return "did you mean " + *s + "?";
  std::string names;
  for (const std::string& sibling : siblings) names += (names.empty() ? "" : ", ") + leaf_of(sibling);
  return (key.find('.') == std::string::npos ? "allowed sections: " : "allowed keys: ") + names;
}

}  // namespace

bool Range::contains(double value) const {
  if (!std::isfinite(value)) return false;
  if (min && (min_exclusive ? value <= *min : value < *min)) return false;
  if (max && (max_exclusive ? value >= *max : value > *max)) return false;
  return true;
}

std::string Range::text() const {
  if (min && max)
    return fmt::format("{}{}, {}{}", min_exclusive ? "(" : "[", number_text(*min),
                       number_text(*max), max_exclusive ? ")" : "]");
  if (min) return (min_exclusive ? "> " : ">= ") + number_text(*min);
  if (max) return (max_exclusive ? "< " : "<= ") + number_text(*max);
  return "";
}

std::string origin_of(const toml::node* node, const std::string& fallback) {
  if (!node) return fallback;
  const toml::source_region& source = node->source();
  if (!source.path || source.path->empty()) return fallback;
  if (source.path->rfind("--set ", 0) == 0 || source.begin.line == 0) return *source.path;
  return fmt::format("{}:{}", *source.path, source.begin.line);
}

void fail_at(const std::string& origin, const std::string& key, const std::string& problem) {
  if (origin.rfind("--set " + key + "=", 0) == 0) throw UserError(origin + ": " + problem);
  throw UserError(origin + ": " + key + ": " + problem);
}

void Checker::fail(const std::string& key, const std::string& problem) const {
  // A key left at its default has no node: report at the nearest enclosing table.
  toml::path path(key);
  const toml::node* node = nullptr;
  while (!path.empty() && !(node = merged_.at_path(path).node())) path = path.parent();
  fail_at(origin_of(node, fallback_), key, problem);
}

int64_t read_integer(const toml::node& node, const std::string& key, const ReadContext& context,
                     const Range& range) {
  std::optional<int64_t> value;
  if (const auto* i = node.as_integer()) {
    value = **i;
  } else if (const auto* f = node.as_floating_point()) {
    // A whole float is accepted, so that `tokens = 6.5e12` reads naturally.
    double d = **f;
    if (std::isfinite(d) && d == std::trunc(d) && std::abs(d) < 9.2e18) value = int64_t(d);
  }
  std::string origin = origin_of(&node, context.fallback_origin);
  if (!value) fail_at(origin, key, "expected an integer, got " + describe(node));
  if (!range.contains(double(*value)))
    fail_at(origin, key, fmt::format("{} is out of range; allowed: {}", *value, range.text()));
  return *value;
}

double read_float(const toml::node& node, const std::string& key, const ReadContext& context,
                  const Range& range) {
  std::string origin = origin_of(&node, context.fallback_origin);
  double value = 0;
  if (const auto* f = node.as_floating_point()) value = **f;
  else if (const auto* i = node.as_integer()) value = double(**i);
  else fail_at(origin, key, "expected a number, got " + describe(node));
  if (!range.contains(value))
    fail_at(origin, key,
            fmt::format("{} is out of range; allowed: {}", float_text(value),
                        range.text().empty() ? "a finite number" : range.text()));
  return value;
}

bool read_bool(const toml::node& node, const std::string& key, const ReadContext& context) {
  if (const auto* b = node.as_boolean()) return **b;
  fail_at(origin_of(&node, context.fallback_origin), key,
          "expected true or false, got " + describe(node));
}

std::string read_string(const toml::node& node, const std::string& key,
                        const ReadContext& context) {
  if (const auto* s = node.as_string()) return **s;
  fail_at(origin_of(&node, context.fallback_origin), key,
          "expected a string, got " + describe(node));
}

std::string read_choice(const toml::node& node, const std::string& key,
                        const ReadContext& context, const std::vector<std::string>& choices) {
  std::string origin = origin_of(&node, context.fallback_origin);
  const auto* s = node.as_string();
  if (!s) fail_at(origin, key, "expected one of " + join_quoted(choices) + ", got " + describe(node));
  if (std::find(choices.begin(), choices.end(), **s) == choices.end())
    fail_at(origin, key,
            fmt::format("unknown value {}; allowed: {}", string_text(**s), join_quoted(choices)));
  return **s;
}

const toml::table& expect_table(const toml::node& node, const std::string& key,
                                const ReadContext& context, const std::string& what) {
  if (const auto* t = node.as_table()) return *t;
  fail_at(origin_of(&node, context.fallback_origin), key,
          "expected " + what + ", got " + describe(node));
}

const toml::array& expect_array(const toml::node& node, const std::string& key,
                                const ReadContext& context, const std::string& what) {
  if (const auto* a = node.as_array()) return *a;
  fail_at(origin_of(&node, context.fallback_origin), key,
          "expected " + what + ", got " + describe(node));
}

void fail_unknown_key(const toml::node& node, const std::string& key,
                      const std::vector<std::string>& siblings, const ReadContext& context) {
  std::string what = node.is_table() ? "unknown section" : "unknown key";
  fail_at(origin_of(&node, context.fallback_origin), key,
          what + "; " + suggestion(key, siblings, context.all_keys));
}

std::string integer_text(int64_t value) { return fmt::format("{}", value); }

std::string float_text(double value) {
  // fmt's shortest round-trip form; TOML needs a '.' or an exponent to read a float back.
  std::string text = fmt::format("{}", value);
  if (text.find_first_of(".eEn") == std::string::npos) text += ".0";
  return text;
}

std::string string_text(const std::string& value) {
  std::ostringstream out;
  out << toml::toml_formatter{toml::value<std::string>(value),
                              toml::format_flags::allow_unicode_strings};
  return out.str();
}

std::string join_quoted(const std::vector<std::string>& names) {
  std::string text;
  for (const std::string& name : names) text += (text.empty() ? "" : ", ") + string_text(name);
  return text;
}

}  // namespace sigma::schema
