#include "kernels/op_profile.h"

#include "kernels/device.h"

#include <algorithm>
#include <map>
#include <utility>

namespace sigma::op_profile {
namespace {

// One timed call, on its device's clock.
struct Record {
  std::pair<const char*, std::string> key;  // op, shapes
  Device device = Device::kCpu;
  device::TimePoint start, end;
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
  record.device = first.device;
  record.start = device::time_now(first.device);
  record_ = int64_t(r.records.size());
  r.records.push_back(std::move(record));
}

Scope::~Scope() {
  if (record_ < 0) return;
  Record& record = recorder().records[size_t(record_)];
  record.end = device::time_now(record.device);
}

std::vector<Row> take() {
  std::map<std::pair<const char*, std::string>, Row> sums;
  for (Record& record : recorder().records) {
    Row& row = sums[record.key];
    row.op = record.key.first;
    row.shapes = record.key.second;
    row.calls += 1;
    row.ms += device::elapsed_ms(record.start, record.end);
  }
  recorder().records.clear();
  std::vector<Row> rows;
  for (auto& [key, row] : sums) rows.push_back(std::move(row));
  std::sort(rows.begin(), rows.end(), [](const Row& a, const Row& b) { return a.ms > b.ms; });
  return rows;
}

}  // namespace sigma::op_profile
