// The subcommands. Each registers itself on the CLI app and runs from its callback.
#pragma once

#include <CLI/CLI.hpp>

namespace sigma::app {

void add_train_command(CLI::App& app);
void add_info_command(CLI::App& app);
void add_data_command(CLI::App& app);
void add_generate_command(CLI::App& app);
void add_convert_command(CLI::App& app);
void add_eval_command(CLI::App& app);
void add_report_command(CLI::App& app);

}  // namespace sigma::app
