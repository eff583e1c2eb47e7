// `sigma data prepare`: files, directories and JSONL -> tokens -> one indexed dataset.
// *.gz files are decompressed by running `gzip -dc` (gzip is part of every Debian system),
// which keeps the build free of a zlib dependency. A binary file (a NUL byte in its first
// 8 KiB) or an unreadable one is skipped and counted; a malformed JSONL line is an error.
// Leaves out: parallel tokenizing and sharded outputs for very large corpora.
#include "core/data/prepare.h"

#include "core/data/indexed_dataset.h"
#include "core/data/tokenizer.h"
#include "core/error.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string_view>

extern char** environ;

namespace sigma {

namespace {

namespace fs = std::filesystem;

constexpr size_t kBinaryProbeBytes = 8192;

// Every input in order; a directory becomes its regular files, recursively, sorted.
std::vector<fs::path> collect_files(const std::vector<std::string>& inputs) {
  std::vector<fs::path> files;
  for (const std::string& input : inputs) {
    std::error_code ec;
    fs::file_status status = fs::status(input, ec);
    if (!fs::exists(status)) fail("input {}: not found", input);
    if (!fs::is_directory(status)) {
      files.emplace_back(input);
      continue;
    }
    std::vector<fs::path> found;
    fs::recursive_directory_iterator it(input, fs::directory_options::skip_permission_denied, ec);
    if (ec) fail("input {}: cannot list: {}", input, ec.message());
    for (; it != fs::recursive_directory_iterator(); it.increment(ec)) {
      if (ec) break;  // an unreadable corner of the tree: keep what was found
      std::error_code type_ec;
      if (it->is_regular_file(type_ec)) found.push_back(it->path());
    }
    std::sort(found.begin(), found.end());
    files.insert(files.end(), found.begin(), found.end());
  }
  return files;
}

// Runs `gzip -dc -- path` and collects its output; false when gzip reports an error.
bool read_gzip(const fs::path& path, std::string& text) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0)
    fail("{}: cannot create a pipe for gzip: {}", path.string(), std::strerror(errno));
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
  std::string file = path.string();
  char* argv[] = {const_cast<char*>("gzip"), const_cast<char*>("-dc"), const_cast<char*>("--"),
                  file.data(), nullptr};
  pid_t pid;
  int rc = posix_spawnp(&pid, "gzip", &actions, nullptr, argv, environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(fds[1]);
  if (rc != 0) {
    ::close(fds[0]);
    fail("{}: cannot run gzip to decompress it: {}", file, std::strerror(rc));
  }
  text.clear();
  char buffer[1 << 16];
  for (;;) {
    ssize_t got = ::read(fds[0], buffer, sizeof(buffer));
    if (got > 0) text.append(buffer, size_t(got));
    else if (got == 0 || errno != EINTR) break;
  }
  ::close(fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

bool read_plain(const fs::path& path, std::string& text) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  return !in.bad();
}

class Preparer {
 public:
  explicit Preparer(const PrepareOptions& options)
      : options_(options),
        tokenizer_(make_tokenizer(options.tokenizer)),
        writer_(options.out_prefix, tokenizer_->vocab_size()) {}

  void add_file(const fs::path& path) {
    bool gz = path.extension() == ".gz";
    bool ok = gz ? read_gzip(path, text_) : read_plain(path, text_);
    if (!ok || std::string_view(text_).substr(0, kBinaryProbeBytes).find('\0') !=
                   std::string_view::npos) {
      ++stats_.skipped_files;
      return;
    }
    fs::path name = gz ? path.stem() : path;
    if (name.extension() == ".jsonl") add_jsonl(path.string());
    else add_document(text_);
  }

  PrepareStats finish() {
    writer_.finish();
    return stats_;
  }

  int64_t documents() const { return stats_.documents; }

 private:
  void add_jsonl(const std::string& path) {
    std::string_view rest = text_;
    for (int64_t line_number = 1; !rest.empty(); ++line_number) {
      size_t end = rest.find('\n');
      std::string_view line = rest.substr(0, end);
      rest = end == std::string_view::npos ? std::string_view() : rest.substr(end + 1);
      if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
      nlohmann::json object;
      try {
        object = nlohmann::json::parse(line);
      } catch (const nlohmann::json::parse_error& e) {
        fail("{}:{}: malformed JSON at byte {} of the line", path, line_number, e.byte);
      }
      auto field = object.is_object() ? object.find(options_.jsonl_field) : object.end();
      if (field == object.end() || !field->is_string())
        fail("{}:{}: no string field \"{}\" (set another with --jsonl-field)", path, line_number,
             options_.jsonl_field);
      add_document(field->get_ref<const std::string&>());
    }
  }

  void add_document(const std::string& text) {
    if (text.empty()) return;
    std::vector<int32_t> tokens = tokenizer_->encode(text);
    tokens.push_back(tokenizer_->eos_id());
    writer_.add_document(tokens);
    ++stats_.documents;
    stats_.tokens += int64_t(tokens.size());
    stats_.text_bytes += int64_t(text.size());
  }

  const PrepareOptions& options_;
  std::unique_ptr<Tokenizer> tokenizer_;
  IndexedDatasetWriter writer_;
  std::string text_;  // the current file, reused to avoid an allocation per file
  PrepareStats stats_;
};

}  // namespace

PrepareStats prepare_dataset(const PrepareOptions& options) {
  auto start = std::chrono::steady_clock::now();
  if (options.out_prefix.empty()) fail("--out: an output prefix is required");
  for (std::string_view suffix : {".bin", ".idx"})
    if (options.out_prefix.ends_with(suffix))
      fail("--out {}: give the prefix, without {} (PREFIX.bin and PREFIX.idx are written)",
           options.out_prefix, suffix);
  if (options.inputs.empty()) fail("data prepare: no inputs given");
  std::vector<fs::path> files = collect_files(options.inputs);

  Preparer preparer(options);
  PrepareStats stats;
  try {
    for (const fs::path& file : files) preparer.add_file(file);
    if (preparer.documents() == 0)
      fail("data prepare: no text documents found in {} input file(s)", files.size());
    stats = preparer.finish();
  } catch (...) {
    std::error_code ec;  // no half-written .bin left behind to puzzle anyone
    fs::remove(options.out_prefix + ".bin", ec);
    throw;
  }
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return stats;
}

}  // namespace sigma
