#include "eval/task_file.h"

#include "core/error.h"

#include <fstream>

namespace sigma {

using nlohmann::json;

std::vector<TaskItem> read_task_file(const std::string& path, int64_t limit,
                                     const std::function<void(const json&)>& validate) {
  std::ifstream in(path);
  if (!in) fail("{}: cannot open the task file", path);
  std::vector<TaskItem> items;
  std::string line;
  for (int64_t number = 1; std::getline(in, line); ++number) {
    if (line.find_first_not_of(" \t\r") == std::string::npos || line[0] == '#') continue;
    json item = json::parse(line, nullptr, false);
    if (item.is_discarded()) fail("{}:{}: not valid JSON", path, number);
    if (!item.is_object()) fail("{}:{}: expected a JSON object", path, number);
    try {
      validate(item);
    } catch (const ItemError& e) {
      fail("{}:{}: {}", path, number, e.what);
    }
    items.push_back({number, std::move(item)});
    if (limit > 0 && int64_t(items.size()) >= limit) break;
  }
  if (items.empty()) fail("{}: no items", path);
  return items;
}

namespace {
const json& field(const json& item, const char* key, bool (json::*is)() const, const char* type) {
  auto it = item.find(key);
  if (it == item.end()) throw ItemError{fmt::format("missing \"{}\" ({})", key, type)};
  if (!((*it).*is)())
    throw ItemError{fmt::format("\"{}\" must be {}, not {}", key, type, it->dump())};
  return *it;
}
}  // namespace

const std::string& string_field(const json& item, const char* key) {
  return field(item, key, &json::is_string, "a string").get_ref<const std::string&>();
}
const json& array_field(const json& item, const char* key) {
  return field(item, key, &json::is_array, "an array");
}
const json& object_field(const json& item, const char* key) {
  return field(item, key, &json::is_object, "an object");
}
int64_t int_field(const json& item, const char* key) {
  return field(item, key, &json::is_number_integer, "an integer").get<int64_t>();
}

}  // namespace sigma
