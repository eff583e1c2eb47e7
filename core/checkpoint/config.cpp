// The [checkpoint] recipe keys and the default of checkpoint.dir.
#include "core/recipe/sections.h"

#include <filesystem>

namespace sigma {

using schema::Range;

const schema::Section<CheckpointConfig>& checkpoint_section() {
  static const schema::Section<CheckpointConfig> section = [] {
    schema::Section<CheckpointConfig> checkpoint(
        "When to save, how many to keep, and where (HDF5, one file per rank).");
    checkpoint
        .key("interval", &CheckpointConfig::interval,
             "steps between checkpoints; 0 saves only at the end", Range::at_least(0), "steps")
        .key("keep", &CheckpointConfig::keep,
             "newest committed checkpoints kept, older ones deleted; 0 keeps all",
             Range::at_least(0))
        .key("save_final", &CheckpointConfig::save_final, "save when the last step completes")
        .key("async", &CheckpointConfig::async,
             "write in the background from a host copy of the state while training goes on; "
             "false writes before the next step")
        .key("dir", &CheckpointConfig::dir,
             "checkpoint directory; empty means `<run.out_dir>/checkpoints`");
    return checkpoint;
  }();
  return section;
}

void resolve_checkpoint(CheckpointConfig& checkpoint, const RunConfig& run) {
  if (checkpoint.dir.empty())
    checkpoint.dir = (std::filesystem::path(run.out_dir) / "checkpoints").string();
}

}  // namespace sigma
