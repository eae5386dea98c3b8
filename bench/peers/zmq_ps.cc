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
#include <zmq.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "ps_peer.h"

namespace {

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
  ps_peer::Usage start = ps_peer::Now();
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
      ps_peer::GradientApplier(weights, lr)
          .Feed(static_cast<const char*>(zmq_msg_data(&gradient)), bytes);
      zmq_msg_close(&gradient);
      SendText(socket, "K");
    } else if (kind == 'T') {
      start = ps_peer::Now();
      SendText(socket, "K");
    } else if (kind == 'Q') {
      SendText(socket, ps_peer::UsageSince(start));
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
  const int status = ps_peer::RunWorker("zmq_ps", bytes, seconds, pull, push, request);
  zmq_close(socket);
  zmq_ctx_term(context);
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  return ps_peer::Main(argc, argv, "zmq_ps", Server, Worker);
}
