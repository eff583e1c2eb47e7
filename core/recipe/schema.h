// The key-table machinery behind recipes. Each section declares one table of keys (name,
// type, default, unit, range or allowed values, one doc line) next to its struct; that
// table reads TOML into the struct, words the errors, writes the resolved TOML and renders
// the Markdown key reference, so the four cannot drift apart (STYLE.md, "Config").
//
// Defaults are whatever the struct's initialisers say: the table never repeats them.
// Leaves out: files, `include` and `--set` (recipe.cpp), and the keys and cross-field
// checks of each section (beside its struct, e.g. models/config.cpp).
#pragma once

#include "core/error.h"

#include <toml++/toml.h>

#include <algorithm>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace sigma::schema {

// The bounds a numeric key accepts; either side may be absent or exclusive.
struct Range {
  std::optional<double> min;
  std::optional<double> max;
  bool min_exclusive = false;
  bool max_exclusive = false;

  static Range at_least(double min) { return {min, std::nullopt, false, false}; }
  static Range above(double min) { return {min, std::nullopt, true, false}; }
  static Range closed(double min, double max) { return {min, max, false, false}; }
  static Range half_open(double min, double max) { return {min, max, false, true}; }  // [min, max)
  static Range open_closed(double min, double max) { return {min, max, true, false}; }  // (min, max]

  bool contains(double value) const;
  std::string text() const;  // ">= 1", "> 0", "[0, 1)"; empty when unbounded
};

// One row of the key reference.
struct KeyDoc {
  std::string name;
  std::string type;          // "integer", "float (tokens)", "string", "array of tables"
  std::string default_text;  // as TOML
  std::string allowed;       // range, enum names, or empty
  std::string doc;
};

// One table of the key reference: a section, a nested section, or the items of an array.
struct TableDoc {
  std::string name;  // dotted: "train", "model.attention", "data.sources"
  bool array_item = false;
  std::string doc;
  std::vector<KeyDoc> keys;
};

// What reading needs beyond the table itself.
struct ReadContext {
  std::string fallback_origin;        // the recipe, for nodes that carry no source
  std::vector<std::string> all_keys;  // every dotted key, for "did you mean" across sections
};

// "file:line" of a node, or the `--set key=value` argument it came from; `fallback` when the
// node is null or carries no source.
std::string origin_of(const toml::node* node, const std::string& fallback);

// Throws UserError "<origin>: <key>: <problem>". The key is left out when the origin is the
// `--set` argument of that very key, which names it already.
[[noreturn]] void fail_at(const std::string& origin, const std::string& key,
                          const std::string& problem);

// Reports a cross-field problem at the key at fault: at its file:line (or --set) in the
// merged recipe, else at the enclosing table's, else at the recipe file.
class Checker {
 public:
  Checker(const toml::table& merged, std::string fallback_origin)
      : merged_(merged), fallback_(std::move(fallback_origin)) {}
  [[noreturn]] void fail(const std::string& key, const std::string& problem) const;

 private:
  const toml::table& merged_;
  std::string fallback_;
};

// Value readers and writers shared by every Section; they throw the one-line errors.
int64_t read_integer(const toml::node& node, const std::string& key, const ReadContext& context,
                     const Range& range);
double read_float(const toml::node& node, const std::string& key, const ReadContext& context,
                  const Range& range);
bool read_bool(const toml::node& node, const std::string& key, const ReadContext& context);
std::string read_string(const toml::node& node, const std::string& key,
                        const ReadContext& context);
std::string read_choice(const toml::node& node, const std::string& key,
                        const ReadContext& context, const std::vector<std::string>& choices);
const toml::table& expect_table(const toml::node& node, const std::string& key,
                                const ReadContext& context, const std::string& what);
const toml::array& expect_array(const toml::node& node, const std::string& key,
                                const ReadContext& context, const std::string& what);
[[noreturn]] void fail_unknown_key(const toml::node& node, const std::string& key,
                                   const std::vector<std::string>& siblings,
                                   const ReadContext& context);

std::string integer_text(int64_t value);
std::string float_text(double value);  // shortest text that reads back to the same double
std::string string_text(const std::string& value);
std::string join_quoted(const std::vector<std::string>& names);

// The keys of one recipe section, read into and written from the struct T.
template <typename T>
class Section {
 public:
  explicit Section(std::string doc) : doc_(std::move(doc)) {}

  Section& key(std::string name, int64_t T::*field, std::string doc, Range range = {},
               std::string unit = {}) {
    return add(std::move(name), with_unit("integer", unit), range.text(), std::move(doc),
               [field, range](const toml::node& n, const std::string& k, const ReadContext& c,
                              T& out) { out.*field = read_integer(n, k, c, range); },
               [field](const T& v) { return integer_text(v.*field); });
  }

  // Unsigned keys (seeds) hold what a TOML integer can: 0 .. 2^63 - 1.
  Section& key(std::string name, uint64_t T::*field, std::string doc, std::string unit = {}) {
    Range range = Range::at_least(0);
    return add(std::move(name), with_unit("integer", unit), range.text(), std::move(doc),
               [field, range](const toml::node& n, const std::string& k, const ReadContext& c,
                              T& out) { out.*field = uint64_t(read_integer(n, k, c, range)); },
               [field](const T& v) { return integer_text(int64_t(v.*field)); });
  }

  Section& key(std::string name, double T::*field, std::string doc, Range range = {},
               std::string unit = {}) {
    return add(std::move(name), with_unit("float", unit), range.text(), std::move(doc),
               [field, range](const toml::node& n, const std::string& k, const ReadContext& c,
                              T& out) { out.*field = read_float(n, k, c, range); },
               [field](const T& v) { return float_text(v.*field); });
  }

  Section& key(std::string name, bool T::*field, std::string doc) {
    return add(std::move(name), "bool", "", std::move(doc),
               [field](const toml::node& n, const std::string& k, const ReadContext& c, T& out) {
                 out.*field = read_bool(n, k, c);
               },
               [field](const T& v) { return std::string(v.*field ? "true" : "false"); });
  }

  Section& key(std::string name, std::string T::*field, std::string doc) {
    return add(std::move(name), "string", "", std::move(doc),
               [field](const toml::node& n, const std::string& k, const ReadContext& c, T& out) {
                 out.*field = read_string(n, k, c);
               },
               [field](const T& v) { return string_text(v.*field); });
  }

  // A non-empty array of integers, each within `range` (model.moe.top_k = [8, 8, 1]).
  Section& key(std::string name, std::vector<int64_t> T::*field, std::string doc,
               Range range = {}) {
    return add(std::move(name), "array of integers", range.text(), std::move(doc),
               [field, range](const toml::node& n, const std::string& k, const ReadContext& c,
                              T& out) {
                 const toml::array& array = expect_array(n, k, c, "a non-empty array of integers");
                 if (array.empty())
                   fail_at(origin_of(&n, c.fallback_origin), k,
                           "empty array; allowed: a non-empty array of integers");
                 std::vector<int64_t> values;
                 for (size_t i = 0; i < array.size(); ++i)
                   values.push_back(
                       read_integer(*array.get(i), k + "[" + std::to_string(i) + "]", c, range));
                 out.*field = std::move(values);
               },
               [field](const T& v) {
                 std::string text = "[";
                 for (size_t i = 0; i < (v.*field).size(); ++i)
                   text += (i ? ", " : "") + integer_text((v.*field)[i]);
                 return text + "]";
               });
  }

  // An enum key, written in TOML as one of the given names.
  template <typename E>
    requires std::is_enum_v<E>
  Section& key(std::string name, E T::*field, std::string doc,
               std::vector<std::pair<E, std::string>> names) {
    auto table = std::make_shared<const std::vector<std::pair<E, std::string>>>(std::move(names));
    std::vector<std::string> choices;
    for (const auto& [value, text] : *table) choices.push_back(text);
    return add(std::move(name), "string", join_quoted(choices), std::move(doc),
               [field, table, choices](const toml::node& n, const std::string& k,
                                       const ReadContext& c, T& out) {
                 std::string text = read_choice(n, k, c, choices);
                 for (const auto& [value, candidate] : *table)
                   if (candidate == text) out.*field = value;
               },
               [field, table](const T& v) {
                 auto it = std::find_if(table->begin(), table->end(),
                                        [&](const auto& entry) { return entry.first == v.*field; });
                 SIGMA_CHECK(it != table->end(), "enum value {} has no name", int(v.*field));
                 return string_text(it->second);
               });
  }

  // An array of tables, each read with `item` (data.sources = [{ path, weight }]).
  template <typename U>
  Section& key(std::string name, std::vector<U> T::*field, std::string doc, const Section<U>& item) {
    auto items = std::make_shared<const Section<U>>(item);
    add(std::move(name), "array of tables", "", std::move(doc),
        [field, items](const toml::node& n, const std::string& k, const ReadContext& c, T& out) {
          const toml::array& array = expect_array(n, k, c, "an array of tables");
          std::vector<U> values;
          for (size_t i = 0; i < array.size(); ++i) {
            std::string element = k + "[" + std::to_string(i) + "]";
            const toml::table& t = expect_table(*array.get(i), element, c, "a table");
            U value{};
            items->read(t, element, c, value);
            values.push_back(std::move(value));
          }
          out.*field = std::move(values);
        },
        [field, items](const T& v) {
          if ((v.*field).empty()) return std::string("[]");
          std::string text = "[\n";
          for (const U& value : v.*field) text += "  " + items->inline_text(value) + ",\n";
          return text + "]";
        });
    keys_.back().describe = [items](const std::string& dotted, std::vector<TableDoc>& out) {
      items->describe(dotted, true, out);
    };
    return *this;
  }

  // A nested section, [prefix.name] (model.attention).
  template <typename U>
  Section& table(std::string name, U T::*field, const Section<U>& sub) {
    auto inner = std::make_shared<const Section<U>>(sub);
    Table entry;
    entry.name = std::move(name);
    entry.read = [field, inner](const toml::node& n, const std::string& k, const ReadContext& c,
                                T& out) {
      inner->read(expect_table(n, k, c, "a table"), k, c, out.*field);
    };
    entry.write = [field, inner](const T& v, const std::string& k, std::string& out) {
      inner->write(v.*field, k, out);
    };
    entry.describe = [inner](const std::string& k, std::vector<TableDoc>& out) {
      inner->describe(k, false, out);
    };
    entry.collect = [inner](const std::string& k, std::vector<std::string>& out) {
      inner->collect_keys(k, out);
    };
    tables_.push_back(std::move(entry));
    return *this;
  }

  // Reads every key present in `table` into `out`; absent keys keep out's values.
  void read(const toml::table& table, const std::string& prefix, const ReadContext& context,
            T& out) const {
    for (auto&& [name_key, node] : table) {
      std::string name(name_key.str());
      std::string dotted = join(prefix, name);
      if (const Key* k = find(keys_, name)) {
        k->read(node, dotted, context, out);
      } else if (const Table* t = find(tables_, name)) {
        t->read(node, dotted, context, out);
      } else {
        std::vector<std::string> siblings;
        for (const Key& k : keys_) siblings.push_back(join(prefix, k.name));
        for (const Table& t : tables_) siblings.push_back(join(prefix, t.name));
        fail_unknown_key(node, dotted, siblings, context);
      }
    }
  }

  // Appends "[prefix]" with every key, then the nested sections, as TOML.
  void write(const T& value, const std::string& prefix, std::string& out) const {
    if (!keys_.empty()) {
      out += "[" + prefix + "]\n";
      for (const Key& k : keys_) out += k.name + " = " + k.write(value) + "\n";
      out += "\n";
    }
    for (const Table& t : tables_) t.write(value, join(prefix, t.name), out);
  }

  // "{ a = 1, b = 2 }", for the items of an array of tables.
  std::string inline_text(const T& value) const {
    std::string text = "{ ";
    for (size_t i = 0; i < keys_.size(); ++i)
      text += (i ? ", " : "") + keys_[i].name + " = " + keys_[i].write(value);
    return text + " }";
  }

  void describe(const std::string& prefix, bool array_item, std::vector<TableDoc>& out) const {
    if (!keys_.empty()) {
      TableDoc table{prefix, array_item, doc_, {}};
      T defaults{};
      for (const Key& k : keys_) {
        std::string allowed =
            k.describe ? "tables, see `[[" + join(prefix, k.name) + "]]`" : k.allowed;
        table.keys.push_back({k.name, k.type, k.write(defaults), allowed, k.doc});
      }
      out.push_back(std::move(table));
    }
    for (const Key& k : keys_)
      if (k.describe) k.describe(join(prefix, k.name), out);
    for (const Table& t : tables_) t.describe(join(prefix, t.name), out);
  }

  // Every dotted key of this section and its nested sections (not array items).
  void collect_keys(const std::string& prefix, std::vector<std::string>& out) const {
    for (const Key& k : keys_) out.push_back(join(prefix, k.name));
    for (const Table& t : tables_) t.collect(join(prefix, t.name), out);
  }

 private:
  struct Key {
    std::string name, type, allowed, doc;
    std::function<void(const toml::node&, const std::string&, const ReadContext&, T&)> read;
    std::function<std::string(const T&)> write;  // the value as TOML text
    std::function<void(const std::string&, std::vector<TableDoc>&)> describe;  // arrays only
  };
  struct Table {
    std::string name;
    std::function<void(const toml::node&, const std::string&, const ReadContext&, T&)> read;
    std::function<void(const T&, const std::string&, std::string&)> write;
    std::function<void(const std::string&, std::vector<TableDoc>&)> describe;
    std::function<void(const std::string&, std::vector<std::string>&)> collect;
  };

  Section& add(std::string name, std::string type, std::string allowed, std::string doc,
               decltype(Key::read) read, decltype(Key::write) write) {
    keys_.push_back({std::move(name), std::move(type), std::move(allowed), std::move(doc),
                     std::move(read), std::move(write), {}});
    return *this;
  }

  static std::string with_unit(const std::string& type, const std::string& unit) {
    return unit.empty() ? type : type + " (" + unit + ")";
  }
  static std::string join(const std::string& prefix, const std::string& name) {
    return prefix.empty() ? name : prefix + "." + name;
  }
  template <typename Entry>
  static const Entry* find(const std::vector<Entry>& entries, const std::string& name) {
    for (const Entry& e : entries)
      if (e.name == name) return &e;
    return nullptr;
  }

  std::string doc_;
  std::vector<Key> keys_;
  std::vector<Table> tables_;
};

}  // namespace sigma::schema
