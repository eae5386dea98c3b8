// What the minimal parameter-server peers (zmq_ps.cc, grpc_ps.cc) share: the server's update as
// it reads a gradient, and the worker's timed pull/push loop with the RESULT line bench_transport
// reads. Header-only: bench/transport/run.sh builds each peer from its one source file.
#pragma once

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

namespace ps_peer {

// This process's CPU time and minor page faults so far, every thread (the library's I/O threads
// too).
struct Usage {
  double cpu_seconds = 0;
  long page_faults = 0;
};

inline Usage Now() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return {static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
              1e-6 * static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec),
          u.ru_minflt};
}

// The usage since `start` as the text the server answers "Q" with.
inline std::string UsageSince(const Usage& start) {
  const Usage now = Now();
  char text[64];
  std::snprintf(text, sizeof text, "%.6f %ld", now.cpu_seconds - start.cpu_seconds,
                now.page_faults - start.page_faults);
  return text;
}

// w -= lr * g, with g arriving as consecutive pieces of float32 bytes that may split a float.
class GradientApplier {
 public:
  GradientApplier(std::vector<float>& weights, float lr) : w_(weights.data()), lr_(lr) {}

  void Feed(const char* p, size_t left) {
    if (have_ > 0) {
      const size_t take = std::min(sizeof(float) - have_, left);
      std::memcpy(split_ + have_, p, take);
      have_ += take, p += take, left -= take;
      if (have_ < sizeof(float)) return;
      Apply(split_, 1);
      have_ = 0;
    }
    const size_t whole = left / sizeof(float);
    Apply(p, whole);
    p += whole * sizeof(float), left -= whole * sizeof(float);
    std::memcpy(split_, p, left);
    have_ = left;
  }

 private:
  void Apply(const char* g, size_t n) {
    float* w = w_ + index_;
    for (size_t i = 0; i < n; ++i) {
      float gi;
      std::memcpy(&gi, g + i * sizeof gi, sizeof gi);
      w[i] -= lr_ * gi;
    }
    index_ += n;
  }

  float* w_;
  float lr_;
  size_t index_ = 0;
  char split_[sizeof(float)];
  size_t have_ = 0;
};

inline double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// The worker's side: 5 untimed round trips, request("T") to start the server's count, pull+push
// back to back for `seconds`, request("Q") for the server's usage; prints
// `RESULT <pull GB/s> <push GB/s> <round-trip GB/s> <iterations> <core-seconds> <page faults>`
// (medians over iterations, as bench_transport computes ours; CPU time and minor page faults of
// both processes in the timed loop). Returns the exit status.
inline int RunWorker(const char* name, size_t bytes, double seconds,
                     const std::function<void()>& pull, const std::function<void()>& push,
                     const std::function<std::string(const char*)>& request) {
  using Clock = std::chrono::steady_clock;
  for (int i = 0; i < 5; ++i) pull(), push();
  request("T");
  const Usage usage_start = Now();
  std::vector<double> pull_s, push_s, rt_gbps;
  const auto start = Clock::now();
  for (int i = 0; i < 100000; ++i) {
    const auto t0 = Clock::now();
    pull();
    const auto t1 = Clock::now();
    push();
    const auto t2 = Clock::now();
    pull_s.push_back(std::chrono::duration<double>(t1 - t0).count());
    push_s.push_back(std::chrono::duration<double>(t2 - t1).count());
    rt_gbps.push_back(2.0 * static_cast<double>(bytes) /
                      std::chrono::duration<double>(t2 - t0).count() * 1e-9);
    if (pull_s.size() >= 5 && std::chrono::duration<double>(t2 - start).count() >= seconds) break;
  }
  const Usage end = Now();
  double server_cpu = 0;
  long server_faults = 0;
  if (std::sscanf(request("Q").c_str(), "%lf %ld", &server_cpu, &server_faults) != 2) {
    std::fprintf(stderr, "%s: unreadable usage from the server\n", name);
    return 1;
  }
  std::printf("RESULT %.6f %.6f %.6f %zu %.6f %ld\n",
              static_cast<double>(bytes) / Median(pull_s) * 1e-9,
              static_cast<double>(bytes) / Median(push_s) * 1e-9, Median(rt_gbps), pull_s.size(),
              end.cpu_seconds - usage_start.cpu_seconds + server_cpu,
              end.page_faults - usage_start.page_faults + server_faults);
  std::fflush(stdout);
  return 0;
}

// The peers' command line: `NAME server BYTES` or `NAME worker ENDPOINT BYTES SECONDS`, BYTES a
// positive multiple of 4 (a float32 model) and SECONDS positive; a usage line and 2 otherwise.
inline int Main(int argc, char** argv, const char* name, int (*server)(size_t bytes),
                int (*worker)(const char* endpoint, size_t bytes, double seconds)) {
  auto bytes_of = [](const char* text) -> size_t {
    char* end = nullptr;
    const unsigned long long v = std::strtoull(text, &end, 10);
    const bool ok = end != text && *end == '\0' && v > 0 && v % sizeof(float) == 0 && v <= (1ull << 34);
    return ok ? static_cast<size_t>(v) : 0;
  };
  if (argc == 3 && std::strcmp(argv[1], "server") == 0) {
    if (const size_t bytes = bytes_of(argv[2]); bytes > 0) return server(bytes);
  } else if (argc == 5 && std::strcmp(argv[1], "worker") == 0) {
    char* end = nullptr;
    const double seconds = std::strtod(argv[4], &end);
    const size_t bytes = bytes_of(argv[3]);
    if (bytes > 0 && end != argv[4] && *end == '\0' && seconds > 0) return worker(argv[2], bytes, seconds);
  }
  std::fprintf(stderr,
               "usage: %s server BYTES | %s worker ENDPOINT BYTES SECONDS (BYTES a positive multiple "
               "of 4, SECONDS > 0; see the header of bench/peers/%s.cc)\n",
               name, name, name);
  return 2;
}

}  // namespace ps_peer
