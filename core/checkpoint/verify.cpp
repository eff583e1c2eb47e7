// Checking a checkpoint's seal, index and rank files against their checksums (verify.h).
#include "core/checkpoint/verify.h"

#include "core/error.h"

#include <fmt/format.h>

#include <charconv>
#include <fstream>
#include <map>
#include <sstream>
#include <system_error>

namespace sigma {
namespace fs = std::filesystem;
namespace {

// COMMITTED is a few short lines; anything longer is not ours.
constexpr std::streamsize kMaxSealBytes = 4096;

std::map<std::string, std::string> read_seal(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot be read", path.string());
  std::string text(size_t(kMaxSealBytes) + 1, '\0');
  in.read(text.data(), kMaxSealBytes + 1);
  text.resize(size_t(in.gcount()));
  if (text.size() > size_t(kMaxSealBytes))
    fail("{}: longer than {} bytes; not a checkpoint seal", path.string(), kMaxSealBytes);
  std::map<std::string, std::string> fields;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    size_t space = line.find(' ');
    if (space == std::string::npos) continue;
    fields[line.substr(0, space)] = line.substr(space + 1);
  }
  return fields;
}

// A field of the seal as an unsigned number (base 16 after "0x"), or a UserError.
uint64_t seal_number(const std::map<std::string, std::string>& fields, const std::string& key,
                     const fs::path& path) {
  auto it = fields.find(key);
  if (it == fields.end())
    fail(
        "{}: no '{}' line; the checkpoint was written by an older sigma or the file is "
        "damaged",
        path.string(), key);
  std::string_view text = it->second;
  int base = 10;
  if (text.starts_with("0x")) text.remove_prefix(2), base = 16;
  uint64_t value = 0;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value, base);
  if (text.empty() || error != std::errc() || end != text.data() + text.size())
    fail("{}: '{} {}' is not a number", path.string(), key, it->second);
  return value;
}

}  // namespace

std::string committed_text(int64_t step, int world_size, const FileDigest& index) {
  return fmt::format("step {}\nworld_size {}\nindex_bytes {}\nindex_crc32 {:#010x}\n", step,
                     world_size, index.bytes, index.crc32);
}

Index open_index(const fs::path& dir) {
  if (!is_committed(dir)) fail_not_committed(dir.string());
  fs::path seal = dir / kCommittedFile;
  std::map<std::string, std::string> fields = read_seal(seal);
  uint64_t bytes = seal_number(fields, "index_bytes", seal);
  uint64_t crc = seal_number(fields, "index_crc32", seal);
  std::string index = (dir / kIndexFile).string();
  std::error_code error;
  if (!fs::is_regular_file(index, error)) fail("{}: missing; the checkpoint is incomplete", index);
  FileDigest digest = digest_file(index);
  if (uint64_t(digest.bytes) != bytes)
    fail("{}: {} bytes, but {} says {}; the file is truncated or was replaced", index, digest.bytes,
         seal.string(), bytes);
  if (digest.crc32 != crc)
    fail("{}: checksum mismatch (expected {:#010x}, got {:#010x}); the file is corrupt", index, crc,
         digest.crc32);
  return Index(index);
}

void check_rank_file(const std::string& path, const IndexedRankFile& expected,
                     const std::string& index_path) {
  std::error_code error;
  if (!fs::is_regular_file(path, error)) fail("{}: missing (listed in {})", path, index_path);
  FileDigest digest = digest_file(path);
  if (digest.bytes != expected.bytes)
    fail("{}: {} bytes, but the index says {}; the file is truncated or was replaced", path,
         digest.bytes, expected.bytes);
  if (digest.crc32 != expected.crc32)
    fail("{}: checksum mismatch (expected {:#010x}, got {:#010x}); the file is corrupt", path,
         expected.crc32, digest.crc32);
}

std::string verify_checkpoint(const fs::path& dir) {
  try {
    Index index = open_index(dir);
    std::string index_path = (dir / kIndexFile).string();
    for (const IndexedRankFile& rank : index.rank_files())
      check_rank_file((dir / rank_file_name(rank.rank)).string(), rank, index_path);
    return "";
  } catch (const UserError& e) {
    return e.what();
  }
}

std::string find_verified_checkpoint(
    const std::string& root,
    const std::function<void(const std::string& dir, const std::string& reason)>& skipped) {
  std::vector<std::string> candidates;
  std::string latest = find_latest_checkpoint(root);  // `latest`'s choice, if committed
  if (!latest.empty()) candidates.push_back(latest);
  std::vector<StepDir> dirs = list_step_dirs(root);
  for (auto it = dirs.rbegin(); it != dirs.rend(); ++it)
    if (it->committed && fs::path(latest) != it->path) candidates.push_back(it->path.string());
  for (const std::string& dir : candidates) {
    std::string reason = verify_checkpoint(dir);
    if (reason.empty()) return dir;
    skipped(dir, reason);
  }
  return "";
}

size_t checkpoint_to_spare(const std::vector<StepDir>& committed, size_t keep) {
  for (size_t i = 0; i < committed.size(); ++i) {
    bool intact = verify_checkpoint(committed[i].path).empty();
    if (intact) return i < keep ? committed.size() : i;
  }
  return committed.size();
}

}  // namespace sigma
