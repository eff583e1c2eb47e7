// Durable file-system steps for checkpoints: write-and-fsync, atomic replace, directory swap.
//
// A checkpoint is only as safe as the order in which its bytes reach the disk: every file is
// fsynced before the entry that vouches for it (COMMITTED, latest) is written, and every
// directory is fsynced after an entry in it is created, renamed or removed. Failures throw
// UserError naming the path and the system's reason. POSIX only (Linux for the atomic swap).
#pragma once

#include <filesystem>
#include <string_view>

namespace sigma {

// fsyncs a file or a directory (a directory's fsync makes its entries durable).
void fsync_path(const std::filesystem::path& path);

// Creates or truncates `path`, writes `contents` and fsyncs it. The caller fsyncs the
// directory once it has written everything there.
void write_file_durably(const std::filesystem::path& path, std::string_view contents);

// Replaces `path` with `contents` so a reader sees the old or the new text, never a mix:
// writes PATH.tmp, fsyncs it, renames it over PATH and fsyncs the directory.
void replace_file_atomically(const std::filesystem::path& path, std::string_view contents);

// Creates `path` and any missing parents, then fsyncs the parent of `path`.
void create_directory_durably(const std::filesystem::path& path);

// Removes a file or a directory tree if present, then fsyncs its parent.
void remove_durably(const std::filesystem::path& path);

// Puts directory `staging` at `target`, which exists, so that at every instant one of the
// two complete directories is on disk, and fsyncs their parent. Returns where the former
// `target` now is, for the caller to remove: `staging` when the file system swaps the two
// atomically (renameat2 RENAME_EXCHANGE), else `fallback_old` after two plain renames.
std::filesystem::path replace_directory(const std::filesystem::path& staging,
                                        const std::filesystem::path& target,
                                        const std::filesystem::path& fallback_old);

}  // namespace sigma
