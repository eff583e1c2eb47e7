// Verifying checkpoints: every byte a load reads is covered by a checksum checked first.
//
//   COMMITTED    "step N\nworld_size W\nindex_bytes B\nindex_crc32 0xXXXXXXXX\n": the seal,
//                written last; it vouches for index.h5 (size and CRC-32)
//   index.h5     vouches for every rank file (size and CRC-32 per file, `/rank_files`)
//   rank files   hold the datasets; a dataset's bytes are covered by its file's CRC
//
// So a flipped byte anywhere is caught before HDF5 parses the file: HDF5 is not hardened
// against malformed files (the index fuzzer found heap overflows in Debian's 1.10.8 on
// corrupt bytes), and no unverified byte reaches it. `--resume auto` skips a checkpoint
// that fails verification and falls back to the previous one; pruning never deletes the
// last checkpoint that verifies. Leaves out: repairing anything.
#pragma once

#include "core/checkpoint/crc32.h"
#include "core/checkpoint/index.h"
#include "core/checkpoint/layout.h"

#include <cstddef>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace sigma {

// The text of COMMITTED for a checkpoint whose index.h5 has digest `index`.
std::string committed_text(int64_t step, int world_size, const FileDigest& index);

// Opens DIR/index.h5 after checking it against COMMITTED (UserError naming the file at
// fault: not committed, an unreadable seal, a size or checksum mismatch, then the index's
// own checks).
Index open_index(const std::filesystem::path& dir);

// Checks a rank file's size and CRC-32 against its row of the index; UserError naming it.
void check_rank_file(const std::string& path, const IndexedRankFile& expected,
                     const std::string& index_path);

// Checks a committed checkpoint without loading it: the seal, the index, every rank file.
// Returns "" when it is intact, else the one-line reason it is not.
std::string verify_checkpoint(const std::filesystem::path& dir);

// The checkpoint `--resume auto` takes: the committed directory `latest` names, else the
// committed ones by descending step, the first that verifies; every one that does not is
// passed to `skipped` (directory, reason) first. "" when none verifies (or none exists).
std::string find_verified_checkpoint(
    const std::string& root,
    const std::function<void(const std::string& dir, const std::string& reason)>& skipped);

// Pruning's rule: `committed` is in keep order (the one just written first) and the first
// `keep` stay. When none of those verifies, returns the index of the first later one that
// does, to be kept too; else (some kept one verifies, or none at all does) committed.size().
size_t checkpoint_to_spare(const std::vector<StepDir>& committed, size_t keep);

}  // namespace sigma
