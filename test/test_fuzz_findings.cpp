// Regression tests for what the fuzzers (fuzz/, scripts/fuzz) found, one case per finding.
#include "core/error.h"
#include "core/recipe/recipe.h"

#include <doctest/doctest.h>

using namespace sigma;

TEST_CASE("recipe: an include of an endless file is refused, not read forever") {
  CHECK_THROWS_WITH_AS(parse_recipe("include = \"/dev/zero\"\n", "endless.toml"),
                       "endless.toml:1: include: cannot read /dev/zero: longer than 16 MiB; "
                       "not a recipe",
                       UserError);
}
