#include "eval/text_metrics.h"

#include <cmath>
#include <map>
#include <set>
#include <sstream>

namespace sigma {

std::vector<std::string> words(const std::string& text) {
  std::istringstream in(text);
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

std::string normalize_command(const std::string& text) {
  std::string joined;
  for (const std::string& w : words(text)) joined += (joined.empty() ? "" : " ") + w;
  for (const char* fence : {"```", "`"}) {
    size_t n = std::string(fence).size();
    if (joined.size() >= 2 * n && joined.compare(0, n, fence) == 0 &&
        joined.compare(joined.size() - n, n, fence) == 0)
      return normalize_command(joined.substr(n, joined.size() - 2 * n));
  }
  return joined;
}

double bag_cosine(const std::vector<std::string>& a, const std::vector<std::string>& b) {
  if (a.empty() && b.empty()) return 1.0;
  std::map<std::string, std::pair<double, double>> counts;
  for (const std::string& w : a) counts[w].first += 1;
  for (const std::string& w : b) counts[w].second += 1;
  double dot = 0, na = 0, nb = 0;
  for (const auto& [w, c] : counts) {
    dot += c.first * c.second;
    na += c.first * c.first;
    nb += c.second * c.second;
  }
  return na > 0 && nb > 0 ? dot / std::sqrt(na * nb) : 0.0;
}

double jaccard(const std::vector<std::string>& a, const std::vector<std::string>& b) {
  std::set<std::string> sa(a.begin(), a.end()), sb(b.begin(), b.end()), all = sa;
  all.insert(sb.begin(), sb.end());
  if (all.empty()) return 1.0;
  double both = 0;
  for (const std::string& w : sa) both += sb.count(w);
  return both / double(all.size());
}

double recall(const std::vector<std::string>& found, const std::vector<std::string>& wanted) {
  std::set<std::string> f(found.begin(), found.end()), w(wanted.begin(), wanted.end());
  if (w.empty()) return std::nan("");
  double hit = 0;
  for (const std::string& x : w) hit += f.count(x);
  return hit / double(w.size());
}

std::string code_block(const std::string& text) {
  size_t open = text.find("```");
  if (open == std::string::npos) return text;
  size_t body = text.find('\n', open);
  if (body == std::string::npos) return text;
  size_t close = text.find("```", body);
  return text.substr(body + 1, close == std::string::npos ? std::string::npos : close - body - 1);
}

}  // namespace sigma
