// zmq_ps: a minimal parameter server over ZeroMQ (libzmq, Debian's libzmq3-dev), the kind of peer
// issue 3's transport target cites ("a ZeroMQ-based parameter server ... about 1.0x iperf3 at
// 4 MB"), measured on this machine by bench_transport beside our shard and iperf3. It does what
// a ps-lite-style server and worker do with one float32 model and nothing more: the worker pulls
// the weights (the server sends them without copying them out; the worker copies them into its
// model's buffer) and pushes a gradient (sent without copying; the server applies w -= lr * g as
// it reads it). No NaN check, no versions, no sharding, no protocol: a lower bound on the work a
// parameter server does per byte.
//
//   zmq_ps server BYTES             prints `READY tcp://127.0.0.1:PORT`, serves one worker
//   zmq_ps worker ENDPOINT BYTES SECONDS
//                                   pulls and pushes back to back for SECONDS after 5 untimed
//                                   round trips; prints `RESULT <pull GB/s> <push GB/s>
//                                   <round-trip GB/s> <iterations> <core-seconds> <page faults>`:
//                                   medians over iterations (as bench_transport computes ours),
//                                   and the CPU time and minor page faults of both processes in
//                                   the timed loop
//
// Messages (REQ/REP): "P" -> the weights; "G" + a frame of BYTES -> "K"; "T" (start of the timed
// loop) -> "K"; "Q" -> the server's CPU seconds and minor page faults since "T", as text, and the
// server exits.
#include <sys/resource.h>
#include <zmq.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

// This process's CPU time and minor page faults so far, every thread (ZeroMQ's I/O thread too).
struct Usage {
  double cpu_seconds = 0;
  long page_faults = 0;
};

Usage Now() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return {static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
              1e-6 * static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec),
          u.ru_minflt};
}

[[noreturn]] void Die(const char* what) {
  std::fprintf(stderr, "zmq_ps: %s: %s\n", what, zmq_strerror(zmq_errno()));
  std::exit(1);
}

void SendText(void* socket, const std::string& text) {
  if (zmq_send(socket, text.data(), text.size(), 0) < 0) Die("send");
}

// Receives one message part into `msg` (initialised by the caller).
void Receive(void* socket, zmq_msg_t* msg) {
  if (zmq_msg_recv(msg, socket, 0) < 0) Die("receive");
}

bool More(void* socket) {
  int more = 0;
  size_t size = sizeof more;
  zmq_getsockopt(socket, ZMQ_RCVMORE, &more, &size);
  return more != 0;
}

int Server(size_t bytes) {
  void* context = zmq_ctx_new();
  void* socket = zmq_socket(context, ZMQ_REP);
  if (zmq_bind(socket, "tcp://127.0.0.1:*") != 0) Die("bind");
  char endpoint[256] = {};
  size_t size = sizeof endpoint;
  zmq_getsockopt(socket, ZMQ_LAST_ENDPOINT, endpoint, &size);
  std::vector<float> weights(bytes / sizeof(float), 0.01f);
  const float lr = 1e-3f;
  std::printf("READY %s\n", endpoint);
  std::fflush(stdout);
  Usage start = Now();
  for (;;) {
    zmq_msg_t tag;
    zmq_msg_init(&tag);
    Receive(socket, &tag);
    const char kind = zmq_msg_size(&tag) > 0 ? *static_cast<const char*>(zmq_msg_data(&tag)) : '?';
    zmq_msg_close(&tag);
    if (kind == 'P') {
      // The weights themselves, not a copy; REQ/REP means the worker has all of them before it
      // can send the push that changes them.
      zmq_msg_t reply;
      zmq_msg_init_data(&reply, weights.data(), bytes, nullptr, nullptr);
      if (zmq_msg_send(&reply, socket, 0) < 0) Die("send weights");
    } else if (kind == 'G') {
      if (!More(socket)) Die("a push without its gradient frame");
      zmq_msg_t gradient;
      zmq_msg_init(&gradient);
      Receive(socket, &gradient);
      if (zmq_msg_size(&gradient) != bytes) {
        std::fprintf(stderr, "zmq_ps: a gradient of %zu bytes, not %zu\n", zmq_msg_size(&gradient),
                     bytes);
        return 1;
      }
      const char* g = static_cast<const char*>(zmq_msg_data(&gradient));
      float* w = weights.data();
      const size_t n = weights.size();
      for (size_t i = 0; i < n; ++i) {
        float gi;
        std::memcpy(&gi, g + i * sizeof gi, sizeof gi);
        w[i] -= lr * gi;
      }
      zmq_msg_close(&gradient);
      SendText(socket, "K");
    } else if (kind == 'T') {
      start = Now();
      SendText(socket, "K");
    } else if (kind == 'Q') {
      const Usage now = Now();
      char text[64];
      std::snprintf(text, sizeof text, "%.6f %ld", now.cpu_seconds - start.cpu_seconds,
                    now.page_faults - start.page_faults);
      SendText(socket, text);
      break;
    } else {
      std::fprintf(stderr, "zmq_ps: unknown message\n");
      return 1;
    }
  }
  zmq_close(socket);
  zmq_ctx_term(context);
  return 0;
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int Worker(const char* endpoint, size_t bytes, double seconds) {
  void* context = zmq_ctx_new();
  void* socket = zmq_socket(context, ZMQ_REQ);
  if (zmq_connect(socket, endpoint) != 0) Die("connect");
  std::vector<float> weights(bytes / sizeof(float)), grads(bytes / sizeof(float));
  for (size_t i = 0; i < grads.size(); ++i) grads[i] = 1e-4f * static_cast<float>(i % 7);
  auto pull = [&] {
    SendText(socket, "P");
    zmq_msg_t reply;
    zmq_msg_init(&reply);
    Receive(socket, &reply);
    if (zmq_msg_size(&reply) != bytes) Die("weights of the wrong size");
    std::memcpy(weights.data(), zmq_msg_data(&reply), bytes);  // into the model's buffer
    zmq_msg_close(&reply);
  };
  auto push = [&] {
    if (zmq_send(socket, "G", 1, ZMQ_SNDMORE) < 0) Die("send");
    zmq_msg_t gradient;  // the gradient's own memory, not a copy
    zmq_msg_init_data(&gradient, grads.data(), bytes, nullptr, nullptr);
    if (zmq_msg_send(&gradient, socket, 0) < 0) Die("send gradient");
    zmq_msg_t ack;
    zmq_msg_init(&ack);
    Receive(socket, &ack);
    zmq_msg_close(&ack);
  };
  auto request = [&](const char* kind) {
    SendText(socket, kind);
    zmq_msg_t reply;
    zmq_msg_init(&reply);
    Receive(socket, &reply);
    std::string text(static_cast<const char*>(zmq_msg_data(&reply)), zmq_msg_size(&reply));
    zmq_msg_close(&reply);
    return text;
  };
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
    std::fprintf(stderr, "zmq_ps: unreadable usage from the server\n");
    return 1;
  }
  std::printf("RESULT %.6f %.6f %.6f %zu %.6f %ld\n",
              static_cast<double>(bytes) / Median(pull_s) * 1e-9,
              static_cast<double>(bytes) / Median(push_s) * 1e-9, Median(rt_gbps), pull_s.size(),
              end.cpu_seconds - usage_start.cpu_seconds + server_cpu,
              end.page_faults - usage_start.page_faults + server_faults);
  zmq_close(socket);
  zmq_ctx_term(context);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && std::strcmp(argv[1], "server") == 0) {
    return Server(std::strtoull(argv[2], nullptr, 10));
  }
  if (argc == 5 && std::strcmp(argv[1], "worker") == 0) {
    return Worker(argv[2], std::strtoull(argv[3], nullptr, 10), std::atof(argv[4]));
  }
  std::fprintf(stderr,
               "usage: zmq_ps server BYTES | zmq_ps worker ENDPOINT BYTES SECONDS (see the header "
               "of bench/peers/zmq_ps.cc)\n");
  return 2;
}
