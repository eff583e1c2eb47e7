#include "eval/kql.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <set>

namespace sigma::kql {

namespace {

bool ident_start(char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_'; }
bool ident_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }

const std::set<std::string> kOperators = {
    "where",           "filter",    "project",  "project-away", "project-keep", "project-rename",
    "project-reorder", "extend",    "distinct", "summarize",    "count",        "take",
    "limit",           "top",       "sort",     "order",        "join",         "union",
    "lookup",          "mv-expand", "parse",    "render",       "sample",       "as",
    "getschema",       "serialize"};

// Words that are never column names.
const std::set<std::string> kKeywords = {
    "by",       "and",         "or",       "not",         "on",        "asc",        "desc",
    "with",     "kind",        "in",       "has",         "contains",  "startswith", "endswith",
    "between",  "matches",     "regex",    "true",        "false",     "null",       "nulls",
    "first",    "last",        "inner",    "innerunique", "leftouter", "rightouter", "fullouter",
    "leftanti", "rightanti",   "leftsemi", "rightsemi",   "outer",     "timechart",  "barchart",
    "piechart", "columnchart", "table",    "linechart",   "has_any",   "has_all",    "notcontains",
    "notin",    "ago",         "now",      "like",        "dynamic",   "typeof",     "withsource",
    "isfuzzy",  "to",          "step",     "from"};

}  // namespace

bool lex(const std::string& s, std::vector<Token>& out, std::string* error) {
  out.clear();
  size_t i = 0;
  while (i < s.size()) {
    char c = s[i];
    if (std::isspace(static_cast<unsigned char>(c))) {
      ++i;
    } else if (c == '"' || c == '\'' ||
               (c == '@' && i + 1 < s.size() && (s[i + 1] == '"' || s[i + 1] == '\''))) {
      bool verbatim = c == '@';
      char quote = verbatim ? s[++i] : c;
      std::string text;
      size_t j = i + 1;
      for (; j < s.size() && s[j] != quote; ++j) {
        if (s[j] == '\\' && !verbatim && j + 1 < s.size()) ++j;
        text += s[j];
      }
      if (j >= s.size()) {
        if (error) *error = "an unterminated string";
        return false;
      }
      out.push_back({TokenKind::kString, text});
      i = j + 1;
    } else if (std::isdigit(static_cast<unsigned char>(c))) {
      size_t j = i;
      while (j < s.size() && (ident_char(s[j]) || s[j] == '.')) ++j;  // 1.5, 10m, 7d, 0x1f
      out.push_back({TokenKind::kNumber, s.substr(i, j - i)});
      i = j;
    } else if (ident_start(c)) {
      size_t j = i;
      while (j < s.size() && ident_char(s[j])) ++j;
      // Operator names with a dash (mv-expand, project-away) are one word; a - b is not.
      if (j + 1 < s.size() && s[j] == '-' && ident_start(s[j + 1])) {
        size_t k = j + 1;
        while (k < s.size() && ident_char(s[k])) ++k;
        if (kOperators.count(s.substr(i, k - i))) j = k;
      }
      out.push_back({TokenKind::kIdent, s.substr(i, j - i)});
      i = j;
    } else {
      static const char* two[] = {"==", "!=", "<=", ">=", "=~", "!~", "=>"};
      std::string sym(1, c);
      for (const char* t : two)
        if (s.compare(i, 2, t) == 0) sym = t;
      out.push_back({TokenKind::kSymbol, sym});
      i += sym.size();
    }
  }
  return true;
}

namespace {

bool is(const Token& t, const char* text) { return t.text == text && t.kind != TokenKind::kString; }

// Splits tokens [begin, end) at top-level pipes; checks bracket balance.
std::string split_pipes(const std::vector<Token>& t, size_t begin, size_t end,
                        std::vector<std::pair<size_t, size_t>>& segments) {
  std::string stack;
  size_t start = begin;
  for (size_t i = begin; i < end; ++i) {
    if (t[i].kind != TokenKind::kSymbol) continue;
    const std::string& x = t[i].text;
    if (x == "(" || x == "[" || x == "{") stack += x;
    if (x == ")" || x == "]" || x == "}") {
      char open = x == ")" ? '(' : x == "]" ? '[' : '{';
      if (stack.empty() || stack.back() != open) return "unbalanced " + x;
      stack.pop_back();
    }
    if (x == "|" && stack.empty()) {
      segments.emplace_back(start, i);
      start = i + 1;
    }
  }
  if (!stack.empty()) return fmt::format("an unclosed {}", stack.back());
  segments.emplace_back(start, end);
  return "";
}

std::string check_query(const std::vector<Token>& t, size_t begin, size_t end);

// The closing parenthesis matching t[open].
size_t matching(const std::vector<Token>& t, size_t open, size_t end) {
  int depth = 0;
  for (size_t i = open; i < end; ++i) {
    if (is(t[i], "(")) ++depth;
    if (is(t[i], ")") && --depth == 0) return i;
  }
  return end;
}

std::string check_source(const std::vector<Token>& t, size_t b, size_t e) {
  if (b == e) return "an empty source";
  if (is(t[b], "(")) {
    size_t close = matching(t, b, e);
    if (close + 1 != e) return "text after a parenthesised source";
    return check_query(t, b + 1, close);
  }
  size_t i = b;
  if (is(t[b], "cluster") && !(b + 5 < e && is(t[b + 5], "database")))
    return "cluster(\"name\") must be followed by .database(\"name\")";
  for (const char* call : {"cluster", "database"}) {
    if (i < e && is(t[i], call)) {
      if (i + 4 > e || !is(t[i + 1], "(") || t[i + 2].kind != TokenKind::kString ||
          !is(t[i + 3], ")") || i + 4 >= e || !is(t[i + 4], "."))
        return fmt::format("{}(\"name\") must be followed by .", call);
      i += 5;
    }
  }
  if (i >= e || t[i].kind != TokenKind::kIdent) return "the source names no table";
  if (i + 1 != e) return fmt::format("unexpected '{}' after the table", t[i + 1].text);
  return "";
}

bool has(const std::vector<Token>& t, size_t b, size_t e, const char* word) {
  for (size_t i = b; i < e; ++i)
    if (is(t[i], word)) return true;
  return false;
}

std::string check_operator(const std::vector<Token>& t, size_t b, size_t e) {
  if (b == e) return "an empty pipe segment";
  const std::string& op = t[b].text;
  if (t[b].kind != TokenKind::kIdent || !kOperators.count(op))
    return fmt::format("'{}' is not a tabular operator", op);
  size_t args = e - b - 1;
  auto need_args = [&]() { return args == 0 ? op + " needs arguments" : std::string(); };
  if (op == "count" || op == "getschema") return args == 0 ? "" : op + " takes no arguments";
  if (op == "take" || op == "limit" || op == "sample")
    return args == 1 && t[b + 1].kind == TokenKind::kNumber ? "" : op + " needs a number";
  if (op == "top")
    return args >= 3 && t[b + 1].kind == TokenKind::kNumber && is(t[b + 2], "by")
               ? ""
               : "top needs N by EXPR";
  if (op == "sort" || op == "order") return args >= 2 && is(t[b + 1], "by") ? "" : op + " needs by";
  if (op == "summarize") {
    if (args == 0) return "summarize needs aggregations or by";
    if (is(t[e - 1], "by")) return "summarize by needs columns";
    return "";
  }
  if (op == "join" || op == "lookup") {
    size_t i = b + 1;
    if (i + 2 < e && is(t[i], "kind") && is(t[i + 1], "=")) i += 3;
    if (i >= e || !is(t[i], "(")) return op + " needs a (subquery)";
    size_t close = matching(t, i, e);
    if (close >= e) return op + ": unbalanced (";
    std::string sub = check_query(t, i + 1, close);
    if (!sub.empty()) return sub;
    return close + 2 < e && is(t[close + 1], "on") ? "" : op + " needs on COLUMNS";
  }
  if (op == "parse")
    return args >= 3 && has(t, b + 1, e, "with") ? "" : "parse needs EXPR with PATTERN";
  if (op == "as" || op == "render")
    return args >= 1 && t[b + 1].kind == TokenKind::kIdent ? "" : op + " needs a name";
  if (op == "serialize") return "";
  return need_args();
}

std::string check_query(const std::vector<Token>& t, size_t begin, size_t end) {
  std::vector<std::pair<size_t, size_t>> segments;
  std::string error = split_pipes(t, begin, end, segments);
  if (!error.empty()) return error;
  error = check_source(t, segments[0].first, segments[0].second);
  for (size_t s = 1; s < segments.size() && error.empty(); ++s)
    error = check_operator(t, segments[s].first, segments[s].second);
  return error;
}

void add_unique(std::vector<std::string>& list, const std::string& name) {
  if (std::find(list.begin(), list.end(), name) == list.end()) list.push_back(name);
}

}  // namespace

std::string syntax_error(const std::string& query) {
  std::vector<Token> tokens;
  std::string error;
  if (!lex(query, tokens, &error)) return error;
  while (!tokens.empty() && is(tokens.back(), ";")) tokens.pop_back();
  if (tokens.empty()) return "an empty query";
  return check_query(tokens, 0, tokens.size());
}

Entities entities(const std::string& query) {
  std::vector<Token> t;
  Entities out;
  if (!lex(query, t, nullptr)) return out;
  std::set<size_t> table_positions;
  for (size_t i = 0; i < t.size(); ++i) {
    bool call = i + 3 < t.size() && is(t[i + 1], "(") && t[i + 2].kind == TokenKind::kString;
    if (call && is(t[i], "cluster")) add_unique(out.clusters, t[i + 2].text);
    if (call && is(t[i], "database")) {
      add_unique(out.databases, t[i + 2].text);
      if (i + 5 < t.size() && is(t[i + 4], ".") && t[i + 5].kind == TokenKind::kIdent)
        table_positions.insert(i + 5);
    }
    // A source: the first word of the query or of a subquery, and union's operands.
    bool starts = i == 0 || is(t[i - 1], "(") || (i >= 1 && is(t[i - 1], "union")) ||
                  (i >= 1 && is(t[i - 1], ",") && i >= 2 && t[i - 2].kind == TokenKind::kIdent &&
                   table_positions.count(i - 2));
    if (starts && t[i].kind == TokenKind::kIdent && !is(t[i], "cluster") && !is(t[i], "database") &&
        !kOperators.count(t[i].text) && (i + 1 == t.size() || !is(t[i + 1], "(")))
      table_positions.insert(i);
  }
  for (size_t p : table_positions) add_unique(out.tables, t[p].text);
  bool in_operator = false;
  for (size_t i = 0; i < t.size(); ++i) {
    if (is(t[i], "|")) in_operator = true;
    if (!in_operator || t[i].kind != TokenKind::kIdent || table_positions.count(i)) continue;
    if (is(t[i - 1], "|") || kKeywords.count(t[i].text) || kOperators.count(t[i].text)) continue;
    if (i + 1 < t.size() && is(t[i + 1], "(")) continue;  // a function call
    if (is(t[i - 1], "=") && i >= 2 && is(t[i - 2], "kind")) continue;
    add_unique(out.columns, t[i].text);
  }
  return out;
}

std::vector<std::string> similarity_tokens(const std::string& query) {
  std::vector<Token> t;
  std::vector<std::string> out;
  if (!lex(query, t, nullptr)) return {query};
  for (const Token& x : t)
    if (x.kind != TokenKind::kSymbol || x.text.size() > 1 ||
        std::string("=<>!~").find(x.text) != std::string::npos)
      out.push_back(x.kind == TokenKind::kString ? "\"" + x.text + "\"" : x.text);
  return out;
}

}  // namespace sigma::kql
