// Durable file-system steps: POSIX open/write/fsync/rename with errors turned into UserError.
#include "core/checkpoint/durable_fs.h"

#include "core/error.h"

#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <system_error>

namespace sigma {
namespace fs = std::filesystem;
namespace {

[[noreturn]] void fail_errno(const fs::path& path, const char* what, int error) {
  fail("{}: {} failed: {}", path.string(), what, std::strerror(error));
}

void fsync_parent(const fs::path& path) {
  fs::path parent = path.parent_path();
  fsync_path(parent.empty() ? fs::path(".") : parent);
}

}  // namespace

void fsync_path(const fs::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail_errno(path, "open", errno);
  if (::fsync(fd) != 0) {
    int error = errno;
    ::close(fd);
    fail_errno(path, "fsync", error);
  }
  ::close(fd);
}

void write_file_durably(const fs::path& path, std::string_view contents) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail_errno(path, "create", errno);
  size_t done = 0;
  while (done < contents.size()) {
    ssize_t n = ::write(fd, contents.data() + done, contents.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int error = errno;
      ::close(fd);
      fail_errno(path, "write", error);
    }
    done += size_t(n);
  }
  if (::fsync(fd) != 0) {
    int error = errno;
    ::close(fd);
    fail_errno(path, "fsync", error);
  }
  if (::close(fd) != 0) fail_errno(path, "close", errno);
}

void replace_file_atomically(const fs::path& path, std::string_view contents) {
  fs::path tmp = path;
  tmp += ".tmp";
  write_file_durably(tmp, contents);
  if (::rename(tmp.c_str(), path.c_str()) != 0) fail_errno(path, "rename", errno);
  fsync_parent(path);
}

void create_directory_durably(const fs::path& path) {
  std::error_code error;
  fs::create_directories(path, error);
  if (error) fail("{}: cannot create directory: {}", path.string(), error.message());
  fsync_parent(path);
}

void remove_durably(const fs::path& path) {
  std::error_code error;
  fs::remove_all(path, error);
  if (error) fail("{}: cannot remove: {}", path.string(), error.message());
  fsync_parent(path);
}

fs::path replace_directory(const fs::path& staging, const fs::path& target,
                           const fs::path& fallback_old) {
  if (::renameat2(AT_FDCWD, staging.c_str(), AT_FDCWD, target.c_str(), RENAME_EXCHANGE) == 0) {
    fsync_parent(target);
    return staging;
  }
  // File systems without the atomic swap (some network and parallel file systems) get two
  // renames; between them the former copy is complete under `fallback_old`.
  if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP)
    fail_errno(target, "rename (exchange)", errno);
  if (::rename(target.c_str(), fallback_old.c_str()) != 0) fail_errno(target, "rename", errno);
  if (::rename(staging.c_str(), target.c_str()) != 0) fail_errno(staging, "rename", errno);
  fsync_parent(target);
  return fallback_old;
}

}  // namespace sigma
