// TCP rendezvous for NCCL's unique id (tcp_rendezvous.h). Plain POSIX sockets: a length,
// then the bytes; each connecting rank first sends its rank, which rank 0 checks.
#include "core/dist/tcp_rendezvous.h"

#include "core/error.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

namespace sigma {
namespace {

using Clock = std::chrono::steady_clock;

struct Socket {
  int fd = -1;
  explicit Socket(int fd) : fd(fd) {}
  ~Socket() {
    if (fd >= 0) ::close(fd);
  }
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
};

void send_all(int fd, const void* data, size_t bytes, const std::string& where) {
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    ssize_t n = ::send(fd, p, bytes, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) fail("rendezvous {}: send failed: {}", where, std::strerror(errno));
    p += n;
    bytes -= size_t(n);
  }
}

void recv_all(int fd, void* data, size_t bytes, const std::string& where) {
  char* p = static_cast<char*>(data);
  while (bytes > 0) {
    ssize_t n = ::recv(fd, p, bytes, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) fail("rendezvous {}: the connection closed early", where);
    p += n;
    bytes -= size_t(n);
  }
}

double seconds_left(Clock::time_point deadline) {
  return std::chrono::duration<double>(deadline - Clock::now()).count();
}

std::string serve(const Launch& launch, const std::string& payload, Clock::time_point deadline,
                  const std::string& where) {
  Socket listener(::socket(AF_INET, SOCK_STREAM, 0));
  if (listener.fd < 0) fail("rendezvous {}: socket: {}", where, std::strerror(errno));
  int yes = 1;
  ::setsockopt(listener.fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_ANY);
  address.sin_port = htons(uint16_t(launch.master_port));
  if (::bind(listener.fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0)
    fail("rendezvous {}: rank 0 cannot listen on port {}: {}", where, launch.master_port,
         std::strerror(errno));
  if (::listen(listener.fd, launch.world_size) != 0)
    fail("rendezvous {}: listen: {}", where, std::strerror(errno));
  for (int served = 1; served < launch.world_size; ++served) {
    pollfd waiting{listener.fd, POLLIN, 0};
    int ready = ::poll(&waiting, 1, int(std::max(0.0, seconds_left(deadline)) * 1000));
    if (ready <= 0)
      fail("rendezvous {}: only {} of {} ranks arrived in time", where, served, launch.world_size);
    Socket peer(::accept(listener.fd, nullptr, nullptr));
    if (peer.fd < 0) fail("rendezvous {}: accept: {}", where, std::strerror(errno));
    int32_t rank = -1;
    recv_all(peer.fd, &rank, sizeof(rank), where);
    if (rank <= 0 || rank >= launch.world_size)
      fail("rendezvous {}: a peer says it is rank {} of {}", where, rank, launch.world_size);
    uint64_t length = payload.size();
    send_all(peer.fd, &length, sizeof(length), where);
    send_all(peer.fd, payload.data(), payload.size(), where);
  }
  return payload;
}

std::string join(const Launch& launch, Clock::time_point deadline, const std::string& where) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  std::string port = std::to_string(launch.master_port);
  if (int e = ::getaddrinfo(launch.master_addr.c_str(), port.c_str(), &hints, &found); e != 0)
    fail("rendezvous {}: cannot resolve MASTER_ADDR: {}", where, gai_strerror(e));
  std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> owned(found, freeaddrinfo);
  // Rank 0 may still be starting: retry until the deadline.
  for (;;) {
    Socket s(::socket(found->ai_family, found->ai_socktype, found->ai_protocol));
    if (s.fd >= 0 && ::connect(s.fd, found->ai_addr, found->ai_addrlen) == 0) {
      int32_t rank = launch.rank;
      send_all(s.fd, &rank, sizeof(rank), where);
      uint64_t length = 0;
      recv_all(s.fd, &length, sizeof(length), where);
      if (length > (1u << 20)) fail("rendezvous {}: a {}-byte answer is not ours", where, length);
      std::string payload(length, '\0');
      recv_all(s.fd, payload.data(), length, where);
      return payload;
    }
    if (seconds_left(deadline) <= 0)
      fail("rendezvous {}: rank 0 did not answer in time (is MASTER_ADDR rank 0's host?)", where);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

}  // namespace

std::string rendezvous_over_tcp(const Launch& launch, const std::string& payload,
                                double timeout_s) {
  std::string where = launch.master_addr + ":" + std::to_string(launch.master_port);
  auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                     std::chrono::duration<double>(timeout_s));
  return launch.rank == 0 ? serve(launch, payload, deadline, where) : join(launch, deadline, where);
}

}  // namespace sigma
