#include "kernels/op_profile.h"

#include "kernels/device.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <utility>

namespace sigma::op_profile {
namespace {

// One timed call: GPU events, or host milliseconds for a CPU op.
struct Record {
  std::pair<const char*, std::string> key;  // op, shapes
  void* start_event = nullptr;
  void* end_event = nullptr;
  double host_ms = 0;
};

// Ops run on the training thread only; the recorder is that thread's.
struct Recorder {
  bool on = false;
  std::vector<Record> records;
};
Recorder& recorder() {
  static Recorder r;
  return r;
}

double host_now_ms() {
  using Ms = std::chrono::duration<double, std::milli>;
  return Ms(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

void start() { recorder().on = true; }
void stop() { recorder().on = false; }
bool recording() { return recorder().on; }

Scope::Scope(const char* op, const Tensor& first, const Tensor& second) {
  Recorder& r = recorder();
  if (!r.on) return;
  Record record;
  record.key = {op, second.defined() ? first.shape.str() + " " + second.shape.str()
                                     : first.shape.str()};
  if (first.device == Device::kCpu)
    record.host_ms = host_now_ms();
  else
    record.start_event = device::record_event();
  record_ = int64_t(r.records.size());
  r.records.push_back(std::move(record));
}

Scope::~Scope() {
  if (record_ < 0) return;
  Record& record = recorder().records[size_t(record_)];
  if (record.start_event)
    record.end_event = device::record_event();
  else
    record.host_ms = host_now_ms() - record.host_ms;
}

std::vector<Row> take() {
  std::map<std::pair<const char*, std::string>, Row> sums;
  for (Record& record : recorder().records) {
    Row& row = sums[record.key];
    row.op = record.key.first;
    row.shapes = record.key.second;
    row.calls += 1;
    row.ms += record.start_event ? device::event_elapsed_ms(record.start_event, record.end_event)
                                 : record.host_ms;
  }
  recorder().records.clear();
  std::vector<Row> rows;
  for (auto& [key, row] : sums) rows.push_back(std::move(row));
  std::sort(rows.begin(), rows.end(), [](const Row& a, const Row& b) { return a.ms > b.ms; });
  return rows;
}

}  // namespace sigma::op_profile
