// Stop signals: the first one sets a flag the trainer polls after each step, the second one
// calls _exit from the handler (only async-signal-safe calls there).
#include "core/train/preemption.h"

#include "core/error.h"

#include <signal.h>
#include <string.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <iterator>
#include <string>

namespace sigma {
namespace {

constexpr int kStopSignals[] = {SIGTERM, SIGINT, SIGUSR1};

std::atomic<int> g_requested{0};
struct sigaction g_previous[std::size(kStopSignals)];
struct sigaction g_previous_xfsz;
bool g_installed = false;

void on_stop_signal(int signal) {
  int expected = 0;
  if (g_requested.compare_exchange_strong(expected, signal)) return;
  static const char message[] =
      "sigma: second stop signal: exiting now; committed checkpoints are untouched\n";
  ssize_t ignored = ::write(STDERR_FILENO, message, sizeof(message) - 1);
  (void)ignored;
  ::_exit(128 + signal);
}

}  // namespace

StopSignals::StopSignals() {
  SIGMA_CHECK(!g_installed, "stop signal handlers are installed twice");
  g_installed = true;
  g_requested = 0;
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;  // a step's system calls go on; the flag is read after it
  for (size_t i = 0; i < std::size(kStopSignals); ++i)
    SIGMA_CHECK(::sigaction(kStopSignals[i], &action, &g_previous[i]) == 0, "sigaction: {}",
                ::strerror(errno));
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  sigemptyset(&ignore.sa_mask);
  SIGMA_CHECK(::sigaction(SIGXFSZ, &ignore, &g_previous_xfsz) == 0, "sigaction: {}",
              ::strerror(errno));
}

StopSignals::~StopSignals() {
  for (size_t i = 0; i < std::size(kStopSignals); ++i)
    ::sigaction(kStopSignals[i], &g_previous[i], nullptr);
  ::sigaction(SIGXFSZ, &g_previous_xfsz, nullptr);
  g_installed = false;
}

int StopSignals::requested() const { return g_requested.load(); }

std::string signal_name(int signal) {
  switch (signal) {
    case SIGTERM:
      return "SIGTERM";
    case SIGINT:
      return "SIGINT";
    case SIGUSR1:
      return "SIGUSR1";
    default:
      return "signal " + std::to_string(signal);
  }
}

}  // namespace sigma
