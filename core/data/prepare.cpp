// `sigma data prepare` (see prepare.h): the reader, the tokenizing workers and the in-order
// writer. *.gz files are decompressed by running `gzip -dc` (gzip is part of every Debian
// system), which keeps the build free of a zlib dependency. A binary file (a NUL byte in its
// first 8 KiB) or an unreadable one is skipped and counted; a malformed JSONL line is an error.
//
// Memory stays flat whatever the input size: the reader blocks while max_batches_in_flight
// batches are read but not yet written, and no stage keeps more than its current batch.
// Leaves out: a zlib reader (gzip runs as a child process).
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
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string_view>
#include <thread>

extern char** environ;

namespace sigma {

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr size_t kBinaryProbeBytes = 8192;
constexpr size_t kReadChunk = size_t(1) << 20;

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

// A file's bytes as a stream: read directly, or from `gzip -dc` through a pipe.
class InputFile {
 public:
  explicit InputFile(const fs::path& path) : path_(path.string()) {
    if (path.extension() != ".gz") {
      fd_ = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
      return;
    }
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0)
      fail("{}: cannot create a pipe for gzip: {}", path_, std::strerror(errno));
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
    posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
    char* argv[] = {const_cast<char*>("gzip"), const_cast<char*>("-dc"), const_cast<char*>("--"),
                    path_.data(), nullptr};
    int rc = posix_spawnp(&pid_, "gzip", &actions, nullptr, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    ::close(fds[1]);
    if (rc != 0) {
      ::close(fds[0]);
      fail("{}: cannot run gzip to decompress it: {}", path_, std::strerror(rc));
    }
    fd_ = fds[0];
  }
  ~InputFile() { close(); }
  InputFile(const InputFile&) = delete;
  InputFile& operator=(const InputFile&) = delete;

  bool opened() const { return fd_ >= 0; }

  // Appends up to kReadChunk bytes to `out`; 0 at the end; -1 on a read error. Reading
  // through a buffer rather than into `out` keeps a small document's capacity small.
  ssize_t read_some(std::string& out) {
    chunk_.resize(kReadChunk);
    ssize_t got;
    do got = ::read(fd_, chunk_.data(), chunk_.size());
    while (got < 0 && errno == EINTR);
    if (got > 0) out.append(chunk_.data(), size_t(got));
    return got;
  }

  // Closes the stream; false when gzip reported an error.
  bool close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    if (pid_ <= 0) return true;
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {}
    pid_ = 0;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
  }

 private:
  std::string path_;
  std::vector<char> chunk_;
  int fd_ = -1;
  pid_t pid_ = 0;
};

bool has_nul(std::string_view text) {
  return text.substr(0, kBinaryProbeBytes).find('\0') != std::string_view::npos;
}

struct Batch {
  int64_t index = 0;
  int64_t text_bytes = 0;
  std::vector<std::string> texts;
  std::vector<std::vector<int32_t>> tokens;
};

// The three stages and the state they share; one mutex guards it all (a batch is a few MB
// of work, so the lock is taken rarely).
class Pipeline {
 public:
  Pipeline(const PrepareOptions& options, const Tokenizer& tokenizer, int max_in_flight)
      : options_(options), tokenizer_(tokenizer), eos_(tokenizer.eos_id()),
        max_in_flight_(max_in_flight) {}

  // Runs on its own thread: every file, in order, cut into batches.
  void read_all(const std::vector<fs::path>& files) {
    try {
      batch_ = std::make_unique<Batch>();
      for (const fs::path& file : files) {
        if (stopped()) return;
        read_file(file);
      }
      if (!batch_->texts.empty()) push_batch();
      std::lock_guard lock(mutex_);
      reading_done_ = true;
      changed_.notify_all();
    } catch (...) {
      stop_with(std::current_exception());
    }
  }

  // Runs on each worker thread.
  void tokenize_all() {
    try {
      for (;;) {
        std::unique_ptr<Batch> batch;
        {
          std::unique_lock lock(mutex_);
          changed_.wait(lock, [&] { return stop_ || !todo_.empty() || reading_done_; });
          if (stop_ || todo_.empty()) return;
          batch = std::move(todo_.front());
          todo_.pop_front();
        }
        batch->tokens.resize(batch->texts.size());
        for (size_t i = 0; i < batch->texts.size(); ++i) {
          std::vector<int32_t>& tokens = batch->tokens[i];
          tokens = tokenizer_.encode(batch->texts[i]);
          if (tokens.empty() || tokens.back() != eos_) tokens.push_back(eos_);
          std::string().swap(batch->texts[i]);  // the text is no longer needed
        }
        std::lock_guard lock(mutex_);
        done_.emplace(batch->index, std::move(batch));
        changed_.notify_all();
      }
    } catch (...) {
      stop_with(std::current_exception());
    }
  }

  // Runs on the calling thread: batches in input order into the writer.
  void write_all(IndexedDatasetWriter& writer, PrepareStats& stats, Clock::time_point start) {
    auto interval = std::chrono::duration<double>(std::max(options_.progress_interval_s, 0.01));
    auto next_report = Clock::now() + interval;
    for (int64_t next = 0;; ++next) {
      std::unique_ptr<Batch> batch;
      {
        std::unique_lock lock(mutex_);
        for (;;) {
          if (stop_) return;
          auto it = done_.find(next);
          if (it != done_.end()) {
            batch = std::move(it->second);
            done_.erase(it);
            break;
          }
          if (reading_done_ && next == batches_read_) return;
          if (options_.on_progress && Clock::now() >= next_report) {
            lock.unlock();
            report(stats, start, false);
            next_report = Clock::now() + interval;
            lock.lock();
            continue;
          }
          changed_.wait_until(lock, next_report);
        }
      }
      for (const std::vector<int32_t>& tokens : batch->tokens) {
        writer.add_document(tokens);
        ++stats.documents;
        stats.tokens += int64_t(tokens.size());
      }
      stats.text_bytes += batch->text_bytes;
      {
        std::lock_guard lock(mutex_);
        --in_flight_;
        buffered_bytes_ -= batch->text_bytes;
        changed_.notify_all();
      }
      if (options_.on_progress && Clock::now() >= next_report) {
        report(stats, start, false);
        next_report = Clock::now() + interval;
      }
    }
  }

  void report(const PrepareStats& stats, Clock::time_point start, bool done) const {
    PrepareProgress progress;
    progress.bytes_read = bytes_read_.load();
    progress.documents = stats.documents;
    progress.tokens = stats.tokens;
    progress.seconds = std::chrono::duration<double>(Clock::now() - start).count();
    progress.done = done;
    options_.on_progress(progress);
  }

  void stop_with(std::exception_ptr error) {
    std::lock_guard lock(mutex_);
    if (!error_) error_ = error;
    stop_ = true;
    changed_.notify_all();
  }

  std::exception_ptr error() const { return error_; }
  int64_t skipped_files() const { return skipped_files_; }
  int64_t peak_buffered_bytes() const { return peak_buffered_bytes_; }

 private:
  bool stopped() {
    std::lock_guard lock(mutex_);
    return stop_;
  }

  void read_file(const fs::path& path) {
    InputFile input(path);
    if (!input.opened()) {
      ++skipped_files_;
      return;
    }
    fs::path name = path.extension() == ".gz" ? path.stem() : path;
    if (name.extension() == ".jsonl") {
      read_jsonl(input, path.string());
      return;
    }
    std::string text;
    ssize_t got;
    while ((got = input.read_some(text)) > 0) {}
    bool ok = got == 0 && input.close();
    if (!ok || has_nul(text)) {
      ++skipped_files_;
      return;
    }
    add_document(std::move(text));
  }

  void read_jsonl(InputFile& input, const std::string& path) {
    std::string buffer;
    size_t begin = 0;  // of the first unparsed line in buffer
    int64_t line_number = 1;
    bool probed = false;
    for (;;) {
      if (begin > 0) {
        buffer.erase(0, begin);
        begin = 0;
      }
      ssize_t got = input.read_some(buffer);
      if (got < 0) fail("{}: read error: {}", path, std::strerror(errno));
      if (!probed) {
        probed = true;
        if (has_nul(buffer)) {
          ++skipped_files_;
          return;
        }
      }
      size_t end;
      while ((end = buffer.find('\n', begin)) != std::string::npos) {
        add_jsonl_line(std::string_view(buffer).substr(begin, end - begin), path, line_number++);
        begin = end + 1;
      }
      if (got == 0) break;
    }
    add_jsonl_line(std::string_view(buffer).substr(begin), path, line_number);
    if (!input.close()) fail("{}: gzip reports the file is corrupt or truncated", path);
  }

  void add_jsonl_line(std::string_view line, const std::string& path, int64_t line_number) {
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) return;
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
    add_document(std::move(field->get_ref<std::string&>()));
  }

  void add_document(std::string text) {
    if (text.empty()) return;
    bytes_read_ += int64_t(text.size());
    batch_->text_bytes += int64_t(text.size());
    batch_->texts.push_back(std::move(text));
    if (batch_->text_bytes >= options_.batch_bytes) push_batch();
  }

  void push_batch() {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return stop_ || in_flight_ < max_in_flight_; });
    if (stop_) throw UserError("prepare stopped");  // replaced by the first error
    ++in_flight_;
    buffered_bytes_ += batch_->text_bytes;
    peak_buffered_bytes_ = std::max(peak_buffered_bytes_, buffered_bytes_);
    batch_->index = batches_read_++;
    todo_.push_back(std::move(batch_));
    batch_ = std::make_unique<Batch>();
    changed_.notify_all();
  }

  const PrepareOptions& options_;
  const Tokenizer& tokenizer_;
  const int32_t eos_;
  const int max_in_flight_;

  std::unique_ptr<Batch> batch_;  // the reader's batch being filled
  int64_t skipped_files_ = 0;     // the reader's; read after it has joined
  std::atomic<int64_t> bytes_read_ = 0;

  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<std::unique_ptr<Batch>> todo_;        // read, waiting for a worker
  std::map<int64_t, std::unique_ptr<Batch>> done_;  // tokenized, waiting for the writer
  int64_t batches_read_ = 0;
  int in_flight_ = 0;  // read and not yet written
  int64_t buffered_bytes_ = 0;
  int64_t peak_buffered_bytes_ = 0;
  bool reading_done_ = false;
  bool stop_ = false;
  std::exception_ptr error_;
};

void check_options(const PrepareOptions& options) {
  if (options.out_prefix.empty()) fail("--out: an output prefix is required");
  for (std::string_view suffix : {".bin", ".idx"})
    if (options.out_prefix.ends_with(suffix))
      fail("--out {}: give the prefix, without {} (PREFIX.bin and PREFIX.idx are written)",
           options.out_prefix, suffix);
  if (options.inputs.empty()) fail("data prepare: no inputs given");
  if (options.num_threads < 0) fail("--threads {}: allowed: >= 0", options.num_threads);
  if (options.batch_bytes < 1 || options.max_batches_in_flight < 0)
    fail("data prepare: batch_bytes must be >= 1 and max_batches_in_flight >= 0");
}

}  // namespace

PrepareStats prepare_dataset(const PrepareOptions& options) {
  auto start = Clock::now();
  check_options(options);
  std::vector<fs::path> files = collect_files(options.inputs);
  std::unique_ptr<Tokenizer> tokenizer = make_tokenizer(options.tokenizer);

  PrepareStats stats;
  stats.threads = options.num_threads > 0
                      ? options.num_threads
                      : int(std::max(1u, std::thread::hardware_concurrency()));
  int max_in_flight = options.max_batches_in_flight > 0 ? options.max_batches_in_flight
                                                        : 2 * stats.threads + 2;
  Pipeline pipeline(options, *tokenizer, max_in_flight);  // asks for eos_id: may fail here
  IndexedDatasetWriter writer(options.out_prefix, tokenizer->vocab_size());
  try {
    std::vector<std::jthread> threads;
    threads.emplace_back([&] { pipeline.read_all(files); });
    for (int i = 0; i < stats.threads; ++i) threads.emplace_back([&] { pipeline.tokenize_all(); });
    try {
      pipeline.write_all(writer, stats, start);
    } catch (...) {
      pipeline.stop_with(std::current_exception());
    }
    threads.clear();  // joins
    if (pipeline.error()) std::rethrow_exception(pipeline.error());
    stats.skipped_files = pipeline.skipped_files();
    stats.peak_buffered_bytes = pipeline.peak_buffered_bytes();
    if (stats.documents == 0)
      fail("data prepare: no text documents found in {} input file(s)", files.size());
    writer.finish();
  } catch (...) {
    std::error_code ec;  // no half-written .bin left behind to puzzle anyone
    fs::remove(options.out_prefix + ".bin", ec);
    throw;
  }
  stats.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (options.on_progress) pipeline.report(stats, start, true);
  return stats;
}

}  // namespace sigma
