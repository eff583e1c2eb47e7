// SIGMA_FAULTS: parsing once, then counting passes and attempts (grammar in fault.h).
#include "core/fault.h"

#include "core/error.h"

#include <signal.h>
#include <unistd.h>

#include <charconv>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace sigma::fault {
namespace {

enum class Action { kKill, kPause, kStep };

struct Item {
  Action action = Action::kStep;
  std::string name;   // the point, or the step fault's kind
  int64_t at = 1;     // the K-th pass of a point, or the step
  int64_t times = 1;  // step faults: how many attempts of the step see it
  int64_t seen = 0;   // passes (points) or attempts (steps) counted so far
};

int64_t parse_count(std::string_view text, std::string_view item) {
  int64_t value = 0;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size() || value < 1)
    fail("SIGMA_FAULTS: '{}': expected a positive integer, got '{}'", item, text);
  return value;
}

Item parse_item(std::string_view text) {
  size_t at = text.find('@');
  if (at == std::string_view::npos)
    fail("SIGMA_FAULTS: '{}': expected KIND@WHERE, e.g. kill@checkpoint.index or nan_loss@7", text);
  Item item;
  std::string_view kind = text.substr(0, at), where = text.substr(at + 1);
  if (kind == "kill" || kind == "pause") {
    item.action = kind == "kill" ? Action::kKill : Action::kPause;
    size_t hash = where.find('#');
    item.name = std::string(where.substr(0, hash));
    if (hash != std::string_view::npos) item.at = parse_count(where.substr(hash + 1), text);
  } else if (kind == "nan_loss" || kind == "nan_grad" || kind == "loss_spike" ||
             kind == "grad_spike") {
    item.name = std::string(kind);
    size_t x = where.find('x');
    item.at = parse_count(where.substr(0, x), text);
    if (x != std::string_view::npos) item.times = parse_count(where.substr(x + 1), text);
  } else {
    fail(
        "SIGMA_FAULTS: '{}': unknown kind '{}'; allowed: kill, pause, nan_loss, nan_grad, "
        "loss_spike, grad_spike",
        text, kind);
  }
  if (item.name.empty()) fail("SIGMA_FAULTS: '{}': nothing after '@'", text);
  return item;
}

struct Faults {
  std::mutex mutex;  // points are passed on the checkpoint writer's thread too
  std::vector<Item> items;
};

Faults& faults() {
  static Faults* parsed = [] {
    auto f = std::make_unique<Faults>();
    const char* env = std::getenv("SIGMA_FAULTS");
    std::string_view spec = env ? env : "";
    while (!spec.empty()) {
      size_t comma = spec.find(',');
      std::string_view text = spec.substr(0, comma);
      if (!text.empty()) f->items.push_back(parse_item(text));
      spec = comma == std::string_view::npos ? "" : spec.substr(comma + 1);
    }
    return f.release();  // never destroyed: a point may be passed during exit
  }();
  return *parsed;
}

}  // namespace

void point(std::string_view name) {
  Faults& f = faults();
  if (f.items.empty()) return;
  bool pause = false;
  {
    std::lock_guard lock(f.mutex);
    for (Item& item : f.items) {
      if (item.action == Action::kStep || item.name != name) continue;
      if (++item.seen != item.at) continue;
      if (item.action == Action::kKill) ::kill(::getpid(), SIGKILL);
      pause = true;
    }
  }
  if (pause) std::this_thread::sleep_for(std::chrono::seconds(kPauseSeconds));
}

bool hits(std::string_view kind, int64_t step) {
  Faults& f = faults();
  if (f.items.empty()) return false;
  std::lock_guard lock(f.mutex);
  bool hit = false;
  for (Item& item : f.items)
    if (item.action == Action::kStep && item.name == kind && item.at == step)
      hit |= item.seen++ < item.times;
  return hit;
}

}  // namespace sigma::fault
