#include "eval/allgather_sim.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <map>
#include <regex>

namespace sigma {

namespace {

// A Python literal of nested lists/tuples of integers.
struct Literal {
  bool is_int = false;
  int64_t value = 0;
  std::vector<Literal> items;
};

class LiteralParser {
 public:
  explicit LiteralParser(const std::string& s, size_t pos) : s_(s), i_(pos) {}

  bool parse(Literal& out) {
    skip();
    if (i_ >= s_.size()) return false;
    char c = s_[i_];
    if (c == '[' || c == '(') {
      char close = c == '[' ? ']' : ')';
      ++i_;
      while (true) {
        skip();
        if (i_ < s_.size() && s_[i_] == close) return ++i_, true;
        Literal item;
        if (!parse(item)) return false;
        out.items.push_back(std::move(item));
        skip();
        if (i_ < s_.size() && s_[i_] == ',')
          ++i_;
        else if (i_ >= s_.size() || s_[i_] != close)
          return false;
      }
    }
    size_t start = i_;
    if (c == '-') ++i_;
    while (i_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[i_]))) ++i_;
    if (i_ == start || (c == '-' && i_ == start + 1)) return false;
    out.is_int = true;
    out.value = std::stoll(s_.substr(start, i_ - start));
    return true;
  }

 private:
  void skip() {
    while (i_ < s_.size()) {
      if (std::isspace(static_cast<unsigned char>(s_[i_])))
        ++i_;
      else if (s_[i_] == '#')
        while (i_ < s_.size() && s_[i_] != '\n') ++i_;
      else
        break;
    }
  }
  const std::string& s_;
  size_t i_;
};

}  // namespace

std::optional<Plan> parse_plan(const std::string& code, std::string* error) {
  static const std::regex assign(R"((^|\n)\s*plan\s*=\s*)");
  std::smatch m;
  // The last assignment wins, as it would when the code ran.
  std::optional<size_t> at;
  for (auto it = std::sregex_iterator(code.begin(), code.end(), assign);
       it != std::sregex_iterator(); ++it)
    at = size_t(it->position() + it->length());
  auto fail_with = [&](const std::string& why) -> std::optional<Plan> {
    if (error) *error = why;
    return std::nullopt;
  };
  if (!at) return fail_with("no `plan = ...` assignment");
  Literal literal;
  if (!LiteralParser(code, *at).parse(literal) || literal.is_int)
    return fail_with("`plan` is not a literal list of steps");
  Plan plan;
  for (const Literal& step : literal.items) {
    if (step.is_int) return fail_with("a step is not a list of transfers");
    plan.emplace_back();
    for (const Literal& t : step.items) {
      if (t.is_int || t.items.size() != 3 || !t.items[0].is_int || !t.items[1].is_int ||
          !t.items[2].is_int)
        return fail_with("a transfer is not (src, dst, chunk)");
      plan.back().push_back({t.items[0].value, t.items[1].value, t.items[2].value});
    }
  }
  return plan;
}

std::string plan_literal(const Plan& plan) {
  std::string out = "plan = [";
  for (size_t s = 0; s < plan.size(); ++s) {
    out += s ? ", [" : "[";
    for (size_t i = 0; i < plan[s].size(); ++i)
      out += fmt::format("{}({}, {}, {})", i ? ", " : "", plan[s][i].src, plan[s][i].dst,
                         plan[s][i].chunk);
    out += "]";
  }
  return out + "]";
}

Simulation simulate(const Topology& topo, const Plan& plan) {
  int64_t n = topo.gpus;
  std::vector<std::vector<bool>> holds(size_t(n), std::vector<bool>(size_t(n), false));
  for (int64_t g = 0; g < n; ++g) holds[size_t(g)][size_t(g)] = true;
  Simulation sim;
  for (size_t s = 0; s < plan.size(); ++s) {
    std::map<std::pair<int64_t, int64_t>, int64_t> per_link;
    for (const Transfer& t : plan[s]) {
      auto in_range = [&](int64_t x) { return x >= 0 && x < n; };
      if (!in_range(t.src) || !in_range(t.dst) || !in_range(t.chunk)) {
        sim.error = fmt::format("step {}: ({}, {}, {}) is out of range", s, t.src, t.dst, t.chunk);
        return sim;
      }
      if (t.src == t.dst) {
        sim.error = fmt::format("step {}: GPU {} sends to itself", s, t.src);
        return sim;
      }
      if (!holds[size_t(t.src)][size_t(t.chunk)]) {
        sim.error = fmt::format("step {}: GPU {} does not hold chunk {} yet", s, t.src, t.chunk);
        return sim;
      }
      per_link[{t.src, t.dst}] += 1;
    }
    double step_us = 0;
    for (const auto& [link, count] : per_link) {
      double bw = topo.bandwidth_gbps[size_t(link.first)][size_t(link.second)];
      if (bw <= 0) {
        sim.error =
            fmt::format("step {}: no link from GPU {} to GPU {}", s, link.first, link.second);
        return sim;
      }
      double busy = topo.latency_us[size_t(link.first)][size_t(link.second)] +
                    double(count) * topo.chunk_bytes / (bw * 1e9) * 1e6;
      step_us = std::max(step_us, busy);
    }
    sim.time_us += step_us;
    for (const Transfer& t : plan[s]) holds[size_t(t.dst)][size_t(t.chunk)] = true;
  }
  for (int64_t g = 0; g < n; ++g)
    for (int64_t c = 0; c < n; ++c)
      if (!holds[size_t(g)][size_t(c)]) {
        sim.error = fmt::format("GPU {} never receives chunk {}", g, c);
        return sim;
      }
  sim.valid = true;
  return sim;
}

Plan ring_plan(int64_t gpus) {
  Plan plan;
  for (int64_t s = 0; s + 1 < gpus; ++s) {
    plan.emplace_back();
    // In step s, GPU g forwards the chunk it received s steps ago: chunk (g - s) mod n.
    for (int64_t g = 0; g < gpus; ++g)
      plan.back().push_back({g, (g + 1) % gpus, ((g - s) % gpus + gpus) % gpus});
  }
  return plan;
}

}  // namespace sigma
