// Fuzz target: the recipe parser. The input is a recipe's TOML text; a NUL byte ends it, and
// NUL-separated `--set` overrides may follow. Includes resolve against recipes/tiny/ (so the
// seeds' includes work). A recipe may be rejected only with a UserError, and one that loads
// must read back from its resolved TOML to the same resolved TOML.
#include "core/error.h"
#include "core/recipe/recipe.h"

#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string input(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> parts;
  for (size_t begin = 0;;) {
    size_t end = input.find('\0', begin);
    parts.push_back(input.substr(begin, end - begin));
    if (end == std::string::npos) break;
    begin = end + 1;
  }
  std::vector<std::string> overrides(parts.begin() + 1, parts.end());
  try {
    sigma::Recipe recipe =
        sigma::parse_recipe(parts[0], "fuzz.toml", overrides, SIGMA_SOURCE_DIR "/recipes/tiny");
    sigma::Recipe again = sigma::parse_recipe(recipe.resolved_toml, "resolved.toml");
    if (again.resolved_toml != recipe.resolved_toml) std::abort();
  } catch (const sigma::UserError&) {
  }
  return 0;
}
