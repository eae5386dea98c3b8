#include "bench/transport/pusher_roles.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <random>
#include <thread>

#include "server/client.h"

namespace orrery::bench {
namespace {

using Clock = std::chrono::steady_clock;

bool WaitForGo() {
  std::string line;
  return static_cast<bool>(std::getline(std::cin, line)) && line == "GO";
}

void PrintDone(uint64_t pushes, Clock::time_point start) {
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  std::printf("DONE %llu %.6f\n", static_cast<unsigned long long>(pushes), seconds);
  std::fflush(stdout);
}

bool SendAll(int fd, const char* data, size_t n) {
  while (n > 0) {
    const ssize_t w = send(fd, data, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    data += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

bool RecvAll(int fd, char* data, size_t n) {
  while (n > 0) {
    const ssize_t r = recv(fd, data, n, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    data += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

void SetNoDelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

}  // namespace

int RunGrpcPusher(const PusherOptions& options) {
  server::ClientOptions c;
  c.endpoints = options.endpoints;
  c.job_id = options.job_id;
  c.tensors = {{"gradient", options.elements}};
  absl::StatusOr<std::unique_ptr<server::PsClient>> ps = server::PsClient::Connect(c);
  if (!ps.ok()) {
    std::cerr << "pusher: " << ps.status() << "\n";
    return 1;
  }
  std::vector<float> weights(options.elements, 0.5f), grads(options.elements);
  std::mt19937 gen(static_cast<uint32_t>(getpid()));
  std::uniform_real_distribution<float> d(-1e-3f, 1e-3f);
  for (float& g : grads) g = d(gen);
  absl::Status st = (*ps)->Init(weights);
  if (st.ok()) st = (*ps)->Pull(0, weights);
  if (!st.ok()) {
    std::cerr << "pusher: " << st << "\n";
    return 1;
  }
  std::printf("READY\n");
  std::fflush(stdout);
  if (!WaitForGo()) return 1;
  const auto start = Clock::now();
  const auto end = start + std::chrono::duration<double>(options.seconds);
  uint64_t pushes = 0;
  for (int64_t step = (*ps)->start_clock(); Clock::now() < end; ++step) {
    st = (*ps)->Push(step, grads, 1, 0.0f);
    if (!st.ok()) {
      std::cerr << "pusher: push " << step << ": " << st << "\n";
      return 1;
    }
    ++pushes;
  }
  PrintDone(pushes, start);
  return 0;
}

int RunTcpPusher(const PusherOptions& options) {
  const std::string& endpoint = options.endpoints.at(0);
  const size_t colon = endpoint.rfind(':');
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(std::atoi(endpoint.c_str() + colon + 1)));
  inet_pton(AF_INET, endpoint.substr(0, colon).c_str(), &addr.sin_addr);
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    std::perror("tcp pusher: connect");
    return 1;
  }
  SetNoDelay(fd);
  std::vector<char> message(options.elements * sizeof(float), 'g');
  char ack[8];
  std::printf("READY\n");
  std::fflush(stdout);
  if (!WaitForGo()) return 1;
  const auto start = Clock::now();
  const auto end = start + std::chrono::duration<double>(options.seconds);
  uint64_t pushes = 0;
  while (Clock::now() < end) {
    if (!SendAll(fd, message.data(), message.size()) || !RecvAll(fd, ack, sizeof ack)) {
      std::perror("tcp pusher: send/recv");
      return 1;
    }
    ++pushes;
  }
  close(fd);
  PrintDone(pushes, start);
  return 0;
}

int RunTcpAckServer(uint32_t message_bytes) {
  const int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (listener < 0 || bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      listen(listener, 128) != 0 ||
      getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    std::perror("tcp server: listen");
    return 1;
  }
  std::printf("READY %d\n", ntohs(addr.sin_port));
  std::fflush(stdout);
  // The parent closes our stdin to stop us.
  std::thread([] {
    std::string line;
    while (std::getline(std::cin, line)) {
    }
    std::_Exit(0);
  }).detach();
  while (true) {
    const int fd = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR) continue;
      std::perror("tcp server: accept");
      return 1;
    }
    SetNoDelay(fd);
    std::thread([fd, message_bytes] {
      std::vector<char> message(message_bytes);
      const char ack[8] = {};
      while (RecvAll(fd, message.data(), message.size()) && SendAll(fd, ack, sizeof ack)) {
      }
      close(fd);
    }).detach();
  }
}

}  // namespace orrery::bench
