// Errors: user errors (bad recipe, missing file, corrupt checkpoint) and internal invariants.
//
// A user error is one line naming what is wrong and exits with code 2 (STYLE.md, "Errors").
// An internal invariant that fails is a bug in sigma: SIGMA_CHECK prints the expression and
// the values involved, and exits with code 3 instead of aborting with a core dump.
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace sigma {

// Thrown for anything the user can fix. main() prints `sigma: <what>` and exits 2.
class UserError : public std::runtime_error {
 public:
  explicit UserError(const std::string& what) : std::runtime_error(what) {}
};

// A user error that every rank of a multi-rank run finds alike (a recipe or launch-layout
// mistake): main() prints it on rank 0 only, so it reads as one line.
class EveryRankError : public UserError {
 public:
  using UserError::UserError;
};

// Thrown when an internal invariant fails. main() prints it and exits 3.
class InternalError : public std::runtime_error {
 public:
  explicit InternalError(const std::string& what) : std::runtime_error(what) {}
};

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw UserError(fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace sigma

#define SIGMA_CHECK(cond, ...)                                                        \
  do {                                                                                \
    if (!(cond))                                                                      \
      throw ::sigma::InternalError(fmt::format("{}:{}: check failed: {} ({})",        \
                                               __FILE__, __LINE__, #cond,             \
                                               fmt::format(__VA_ARGS__)));            \
  } while (0)
