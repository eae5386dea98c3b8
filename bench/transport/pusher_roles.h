// The child roles of the transport benchmark's small-message test. bench_transport re-executes
// itself in one of these roles so that every learner (and the raw-TCP peer's server) is its own
// process, as real learners are.
//
// Protocol with the parent, one line each on stdout/stdin: the child prints `READY [port]` once it
// is connected (and, for gRPC, registered and has pulled), waits for `GO` on stdin, pushes for the
// given seconds, prints `DONE <pushes> <seconds>` and exits 0. Errors go to stderr, exit 1.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace orrery::bench {

struct PusherOptions {
  std::vector<std::string> endpoints;  // gRPC: every shard; TCP: one host:port
  std::string job_id = "transport";
  uint32_t elements = 1024;  // floats per push (4 KB)
  double seconds = 2.0;
};

// A learner with its own PsClient: Connect, Init, one Pull, then Push(step++) back to back.
int RunGrpcPusher(const PusherOptions& options);

// The raw-TCP peer's learner: one blocking socket (TCP_NODELAY); sends elements·4 bytes and waits
// for an 8-byte acknowledgement, back to back.
int RunTcpPusher(const PusherOptions& options);

// The raw-TCP peer's server: listens on 127.0.0.1 (OS-chosen port, printed as `READY <port>`),
// one thread per connection reads each `message_bytes` request in full and answers 8 bytes.
// Runs until its stdin closes.
int RunTcpAckServer(uint32_t message_bytes);

}  // namespace orrery::bench
