// Task files: JSONL, one JSON object per line (blank lines and lines starting with # are
// skipped), each checked by the task's own validator before anything runs, so a malformed
// file stops at once with one line naming the file, the line and what is wrong.
#pragma once

#include <nlohmann/json.hpp>

#include <functional>
#include <string>
#include <vector>

namespace sigma {

struct TaskItem {
  int64_t line = 0;
  nlohmann::json json;
};

// Thrown by a validator; read_task_file() turns it into "FILE:LINE: <what>".
struct ItemError {
  std::string what;
};

// Reads every item (at most `limit` when > 0). `validate` throws ItemError on a bad item.
std::vector<TaskItem> read_task_file(const std::string& path, int64_t limit,
                                     const std::function<void(const nlohmann::json&)>& validate);

// Field checks for validators: the field exists and has the type.
const std::string& string_field(const nlohmann::json& item, const char* key);
const nlohmann::json& array_field(const nlohmann::json& item, const char* key);
const nlohmann::json& object_field(const nlohmann::json& item, const char* key);
int64_t int_field(const nlohmann::json& item, const char* key);

}  // namespace sigma
