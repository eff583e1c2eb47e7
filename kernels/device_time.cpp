#include "kernels/device.h"

#include <chrono>

namespace sigma::device {

TimePoint time_now(Device where) {
  if (where != Device::kCpu) return {record_event(), 0};
  using Ms = std::chrono::duration<double, std::milli>;
  return {nullptr, Ms(std::chrono::steady_clock::now().time_since_epoch()).count()};
}

double elapsed_ms(TimePoint from, TimePoint to) {
  return from.event ? event_elapsed_ms(from.event, to.event) : to.host_ms - from.host_ms;
}

}  // namespace sigma::device
