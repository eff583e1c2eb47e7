// sigma: the command line. Each subcommand lives in its own file (app/cmd_<name>.cpp) and
// only wires core/ and models/ together.
#include "app/commands.h"
#include "core/dist/launch.h"
#include "core/error.h"

#include <CLI/CLI.hpp>
#include <fmt/core.h>

int main(int argc, char** argv) {
  CLI::App app{"sigma: train, evaluate and convert the Sigma family of language models"};
  app.require_subcommand(1);
  sigma::app::add_train_command(app);
  sigma::app::add_info_command(app);
  sigma::app::add_data_command(app);
  sigma::app::add_eval_command(app);
  sigma::app::add_generate_command(app);
  sigma::app::add_convert_command(app);
  sigma::app::add_report_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help
    fmt::print(stderr, "sigma: {}\n", e.what());   // one line, like every user error
    return 2;
  } catch (const sigma::EveryRankError& e) {
    // Every rank found the same mistake: rank 0 says it once.
    if (sigma::launched_rank() == 0) fmt::print(stderr, "sigma: {}\n", e.what());
    return 2;
  } catch (const sigma::UserError& e) {
    fmt::print(stderr, "sigma: {}{}\n", sigma::rank_prefix(), e.what());
    return 2;
  } catch (const sigma::InternalError& e) {
    fmt::print(stderr, "sigma: {}internal error (a bug, please report): {}\n", sigma::rank_prefix(),
               e.what());
    return 3;
  } catch (const std::exception& e) {
    fmt::print(stderr, "sigma: {}\n", e.what());
    return 1;
  }
  return 0;
}
