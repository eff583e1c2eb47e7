// A small Kusto Query Language (KQL) front end for the NL2KQL metrics (SIGMA-FAMILY.md
// section 4): a lexer, a syntax check of the tabular-pipeline subset that NL2KQL questions
// ask for, and the cluster, database, table and column names a query uses.
//
// Grammar checked (a subset of KQL, written for sigma from the public language's shape):
//   query    := source ('|' operator)*            source := [cluster("c").]database("d").Table
//                                                            | Table | '(' query ')'
//   operator := where|filter EXPR | project|project-away|project-keep|project-rename|
//               project-reorder|extend|distinct LIST | summarize [AGGS] [by LIST] |
//               count | take|limit N | top N by EXPR [asc|desc] | sort|order by LIST |
//               join [kind=K] '(' query ')' on LIST | union [kind=K] NAMES-OR-QUERIES |
//               lookup '(' query ')' on LIST | mv-expand LIST | parse EXPR with PATTERN |
//               render NAME [...] | sample N | as NAME | getschema | serialize [LIST]
// plus balanced (), [] and {}, terminated strings ('..', "..", @"..") and no empty segment.
// Expressions are checked for balance and non-emptiness only. Leaves out: let statements,
// multiple statements, functions definitions and the rest of the language.
#pragma once

#include <string>
#include <vector>

namespace sigma::kql {

enum class TokenKind { kIdent, kString, kNumber, kSymbol };
struct Token {
  TokenKind kind;
  std::string text;  // strings without their quotes
};

// Throws nothing: returns false (with `error`) when the text does not lex.
bool lex(const std::string& text, std::vector<Token>& tokens, std::string* error);

// "" when the query passes the subset's syntax check, else what is wrong.
std::string syntax_error(const std::string& query);

struct Entities {
  std::vector<std::string> clusters, databases, tables, columns;
};
// The names a query refers to (best effort on queries that fail the syntax check).
Entities entities(const std::string& query);

// Tokens for Jaccard similarity: every token but punctuation, strings keeping their text.
std::vector<std::string> similarity_tokens(const std::string& query);

}  // namespace sigma::kql
