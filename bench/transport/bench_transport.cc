// bench_transport: the parameter-server transport against its peers, measured in the same run
// (issue 3, experiment 4). Shards are real `orrery server` processes on 127.0.0.1; learners use the
// real client library (server/client.h).
//   (a) Bandwidth: one learner (this process) pulls and pushes a 4 MB and a 64 MB float32 model
//       against 1 and 2 shards; GB/s of payload for pull, push and the pull+push round trip,
//       against iperf3's single-stream loopback bandwidth (unbound, and bound to cores as ours
//       are: --bind_cpus, on by default, binds each shard and the learner to a core of its own
//       while cores last, as `orrery server --cpus` does; the faster iperf3 counts); with
//       --zmq_ps and --grpc_ps, also the
//       round trip of a minimal parameter server over ZeroMQ (bench/peers/zmq_ps.cc) and over bare
//       gRPC (bench/peers/grpc_ps.cc) at each size, in details.zmq_ps and details.grpc_ps.
//   (b) Small-message rate: pushes/s of a 4 KB gradient to one shard with 1, 4 and 16 concurrent
//       learner processes, against the same processes doing a plain TCP request (4 KB) and
//       8-byte acknowledgement over one blocking socket each.
//   (c) Parts against whole messages: the round trip of (a) with one shard, the client's default
//       pull and push parts against whole messages (pull_part_bytes = push_part_bytes = 0), the
//       two alternating in --parts_rounds interleaved pairs (0: skipped).
// Writes one JSON file per figure (DESIGN.md "Benchmarks and experiments") into --results_dir.
//
// Usage: bench_transport [--orrery=BUILD/cli/orrery] [--results_dir=DIR] [--rounds=N]
//            [--seconds=S] [--push_seconds=S] [--iperf_seconds=S] [--sizes_mb=4,64]
//            [--zmq_ps=PATH] [--grpc_ps=PATH] [--shards=1,2] [--learners=1,4,16] [--chunk_size=N] [--pull_part_kb=N] [--push_part_kb=N] [--parts_rounds=N]
//            [--bind_cpus=1|0] [--command=TEXT]
// Without --orrery the shards are this program re-executed in a server role that calls the same
// server::RunServer as `orrery server` (for builds where the CLI is not built).
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "base/cpu_affinity.h"
#include "bench/machine_info.h"
#include "bench/transport/pusher_roles.h"
#include "bench/transport/subprocess.h"
#include "nlohmann/json.hpp"
#include "server/client.h"
#include "server/server_main.h"

namespace orrery::bench {
namespace {

using Clock = std::chrono::steady_clock;
using Json = nlohmann::json;
using std::chrono::milliseconds;

struct Flags {
  std::string orrery;
  std::string zmq_ps;   // bench/peers/zmq_ps, built by run.sh; empty: not measured
  std::string grpc_ps;  // bench/peers/grpc_ps, likewise
  std::string results_dir = "bench/results";
  std::string command;
  int rounds = 2;
  double seconds = 3.0;        // timed pull+push round trips per bandwidth configuration
  double push_seconds = 2.0;   // per small-message configuration
  double iperf_seconds = 3.0;
  std::vector<int> sizes_mb = {4, 64};
  std::vector<int> shards = {1, 2};
  std::vector<int> learners = {1, 4, 16};
  uint32_t chunk_size = 16384;
  int64_t pull_part_kb = -1;  // -1: the client's default (ClientOptions::pull_part_bytes)
  int64_t push_part_kb = -1;  // -1: the client's default (ClientOptions::push_part_bytes)
  int parts_rounds = 3;       // (c): interleaved pairs per size
  // (a): each shard bound to a core of its own (`orrery server --cpus`), and the learner (this
  // process) to another when one is left; the peers' processes likewise.
  bool bind_cpus = true;
  std::vector<int> cores;  // the cores this process may use, read once at start-up
  std::string log_dir;
};

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// ---- shards -------------------------------------------------------------------------------

// S `orrery server` processes of one job, stopped when this goes out of scope.
struct Shards {
  std::vector<std::unique_ptr<Subprocess>> processes;
  std::vector<std::string> endpoints;
};

absl::StatusOr<Shards> StartShards(const Flags& flags, int count, int learners,
                                   const std::string& tag, const std::vector<int>& cpus = {}) {
  Shards s;
  for (int i = 0; i < count; ++i) {
    const std::string log = absl::StrCat(flags.log_dir, "/server_", tag, "_", i, ".log");
    std::vector<std::string> argv = {"--listen", "127.0.0.1:0", "--shard", std::to_string(i),
                                     "--shards", std::to_string(count), "--job", "transport",
                                     "--protocol", "async", "--learners",
                                     std::to_string(learners), "--lr", "0.001"};
    // `orrery server`, or this program in the server role (the same RunServer, no CLI).
    argv.insert(argv.begin(), flags.orrery.empty() ? SelfExecutable() : flags.orrery);
    argv.insert(argv.begin() + 1, flags.orrery.empty() ? "--role=server" : "server");
    if (!cpus.empty()) argv.insert(argv.end(), {"--cpus", std::to_string(cpus[i])});
    auto p = Subprocess::Start(argv, log);
    if (!p.ok()) return p.status();
    s.processes.push_back(std::move(*p));
  }
  for (auto& p : s.processes) {
    absl::StatusOr<std::string> line =
        p->ReadLineStartingWith("ORRERY_SERVER_READY ", milliseconds(30000));
    if (!line.ok()) {
      return absl::UnavailableError(
          absl::StrCat("shard did not start (", line.status().message(), "); see ", flags.log_dir));
    }
    s.endpoints.push_back(line->substr(std::string("ORRERY_SERVER_READY ").size()));
  }
  return s;
}

// ---- (a) bandwidth --------------------------------------------------------------------------

struct Bandwidth {
  double pull_gbps = 0, push_gbps = 0, round_trip_gbps = 0;  // medians over iterations
  double pull_ms = 0, push_ms = 0;
  int iterations = 0;
  // CPU time (user + system) of the learner and the shards over the timed loop, per GB of
  // payload moved, and on average how many cores it kept busy.
  double core_seconds_per_gb = 0, cores_busy = 0;
  int round = 0;  // of RunBandwidth, set there
};

// CPU seconds used so far by this process (the learner) and the shard processes; -1 when one of
// them cannot be read.
double LearnerAndShardsCpuSeconds(const Shards& shards) {
  double total = ProcessCpuSeconds();
  for (const auto& p : shards.processes) {
    const double s = ProcessCpuSeconds(p->pid());
    if (s < 0 || total < 0) return -1;
    total += s;
  }
  return total;
}

constexpr int kTensors = 4;
constexpr int kWarmupRoundTrips = 5;

// Where (a)'s processes run with --bind_cpus: shard i on core a[(1 + i) % n] of the n cores this
// process may use, the learner on a[0] when no shard has it; nothing is bound on one core. On 2
// cores: 1 shard on core 1 and the learner on core 0; 2 shards on cores 1 and 0 and the learner
// free (bound beside a shard it ran slower).
struct Placement {
  std::vector<int> shard_cpus;      // empty: unbound
  std::optional<int> learner_cpu;
  std::string Describe() const {
    if (shard_cpus.empty()) return "not bound to cores";
    std::vector<std::string> s;
    for (int c : shard_cpus) s.push_back(std::to_string(c));
    return absl::StrCat("shards bound to core(s) ", absl::StrJoin(s, ", "), " (orrery server --cpus), ",
                        learner_cpu ? absl::StrCat("the learner to core ", *learner_cpu) : "the learner not bound");
  }
};

Placement PlaceProcesses(const Flags& flags, int num_shards) {
  Placement p;
  const std::vector<int>& cores = flags.cores;
  if (!flags.bind_cpus || cores.size() < 2) return p;
  for (int i = 0; i < num_shards; ++i) p.shard_cpus.push_back(cores[(1 + i) % cores.size()]);
  if (static_cast<size_t>(num_shards) < cores.size()) p.learner_cpu = cores[0];
  return p;
}

// Binds this whole process to `cpu` (if any) for its lifetime, then gives it back `all`.
class ScopedBinding {
 public:
  ScopedBinding(std::optional<int> cpu, const std::vector<int>& all) {
    if (!cpu) return;
    status_ = BindProcessToCpus({*cpu});
    if (status_.ok()) all_ = all;
  }
  ~ScopedBinding() {
    if (!all_.empty()) (void)SetProcessAffinity(all_);
  }
  ScopedBinding(const ScopedBinding&) = delete;
  ScopedBinding& operator=(const ScopedBinding&) = delete;
  // Not OK when the binding failed: the process runs where it ran before.
  const absl::Status& status() const { return status_; }

 private:
  absl::Status status_;
  std::vector<int> all_;
};

absl::StatusOr<Bandwidth> MeasureBandwidth(const Flags& flags, int num_shards, int size_mb) {
  const uint64_t elements = (static_cast<uint64_t>(size_mb) << 20) / sizeof(float);
  const std::string tag = absl::StrCat(size_mb, "mb_s", num_shards);
  const Placement placement = PlaceProcesses(flags, num_shards);
  absl::StatusOr<Shards> shards = StartShards(flags, num_shards, 1, tag, placement.shard_cpus);
  if (!shards.ok()) return shards.status();
  // Before the client starts gRPC's threads (the binding covers those that exist, too). A failed
  // binding fails the measurement rather than report as bound a learner that was not.
  const ScopedBinding bound(placement.learner_cpu, flags.cores);
  if (!bound.status().ok()) return bound.status();
  server::ClientOptions options;
  options.endpoints = shards->endpoints;
  options.job_id = "transport";
  options.chunk_size = flags.chunk_size;
  if (flags.pull_part_kb >= 0) options.pull_part_bytes = static_cast<uint64_t>(flags.pull_part_kb) << 10;
  if (flags.push_part_kb >= 0) options.push_part_bytes = static_cast<uint64_t>(flags.push_part_kb) << 10;
  for (int t = 0; t < kTensors; ++t) {
    options.tensors.push_back({absl::StrCat("layer", t), elements / kTensors});
  }
  absl::StatusOr<std::unique_ptr<server::PsClient>> ps = server::PsClient::Connect(options);
  if (!ps.ok()) return ps.status();
  // Cheap pseudo-random values (16 M normal draws take takes seconds on a loaded machine).
  std::vector<float> weights(elements), grads(elements);
  uint64_t x = 88172645463325252ull;
  for (size_t i = 0; i < elements; ++i) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    const float u = static_cast<float>(x >> 40) * (1.0f / 16777216.0f) - 0.5f;  // [-0.5, 0.5)
    weights[i] = 0.1f * u;
    grads[i] = 1e-4f * u;
  }
  if (absl::Status st = (*ps)->Init(weights); !st.ok()) return st;
  // Warm-up, not timed: connections, HTTP/2 windows, and above all the heaps of both processes
  // growing to their steady size (every fresh page is a page fault).
  int64_t step = 0;
  for (; step < kWarmupRoundTrips; ++step) {
    if (absl::Status st = (*ps)->Pull(step, weights); !st.ok()) return st;
    if (absl::Status st = (*ps)->Push(step, grads, 1, 0.0f); !st.ok()) return st;
  }

  std::vector<double> pull_s, push_s, rt_gbps;
  const double bytes = static_cast<double>(elements * sizeof(float));
  const double cpu_start = LearnerAndShardsCpuSeconds(*shards);
  const auto start = Clock::now();
  for (; step < 100000; ++step) {
    const auto t0 = Clock::now();
    if (absl::Status st = (*ps)->Pull(step, weights); !st.ok()) return st;
    const auto t1 = Clock::now();
    if (absl::Status st = (*ps)->Push(step, grads, 1, 0.0f); !st.ok()) return st;
    const auto t2 = Clock::now();
    pull_s.push_back(Seconds(t1 - t0));
    push_s.push_back(Seconds(t2 - t1));
    rt_gbps.push_back(2 * bytes / Seconds(t2 - t0) * 1e-9);
    if (pull_s.size() >= 5 && Seconds(t2 - start) >= flags.seconds) break;
  }
  const double wall = Seconds(Clock::now() - start);
  const double cpu_end = LearnerAndShardsCpuSeconds(*shards);
  Bandwidth b;
  if (cpu_start >= 0 && cpu_end >= 0) {  // otherwise 0: not measured (null in the JSON)
    const double cpu = cpu_end - cpu_start;
    b.core_seconds_per_gb = cpu / (2 * bytes * static_cast<double>(pull_s.size()) * 1e-9);
    b.cores_busy = cpu / wall;
  }
  b.iterations = static_cast<int>(pull_s.size());
  b.pull_ms = Median(pull_s) * 1e3;
  b.push_ms = Median(push_s) * 1e3;
  b.pull_gbps = bytes / Median(pull_s) * 1e-9;
  b.push_gbps = bytes / Median(push_s) * 1e-9;
  b.round_trip_gbps = Median(rt_gbps);
  return b;
}

struct Iperf3 {
  double gbps = 0;                 // received
  double core_seconds_per_gb = 0;  // client + server CPU time per GB received
  double cores_busy = 0;           // client + server CPU time / wall time
  int round = 0;                   // of RunBandwidth, set there, and
  bool bound = false;              // whether -A bound it to cores
};

// iperf3's loopback bandwidth with one TCP stream, server and client as two processes like our
// learner and shard, and the CPU time both spent (iperf3's own getrusage figures).
// With `cores` {client, server}, each of them bound to its core (iperf3 -A), as our learner and
// shard are with --bind_cpus.
absl::StatusOr<Iperf3> MeasureIperf3(const Flags& flags, std::optional<std::pair<int, int>> cores) {
  absl::StatusOr<int> port = FreeLoopbackPort();
  if (!port.ok()) return port.status();
  std::vector<std::string> server_argv = {"/usr/bin/iperf3", "-s", "-1", "--forceflush", "-p",
                                          std::to_string(*port)};
  std::vector<std::string> client_argv = {"/usr/bin/iperf3", "-c", "127.0.0.1", "-p",
                                          std::to_string(*port), "-J", "-t",
                                          // whole seconds: iperf3 runs "-t 0.2" as its 10 s default
                                          absl::StrCat(std::max(1L, std::lround(flags.iperf_seconds)))};
  if (cores) {
    server_argv.insert(server_argv.end(), {"-A", std::to_string(cores->second)});
    client_argv.insert(client_argv.end(), {"-A", std::to_string(cores->first)});
  }
  auto server = Subprocess::Start(server_argv, flags.log_dir + "/iperf3_server.log");
  if (!server.ok()) return server.status();
  absl::StatusOr<std::string> ready =
      (*server)->ReadLineStartingWith("Server listening", milliseconds(10000));
  if (!ready.ok()) return absl::UnavailableError("iperf3 -s did not start listening");
  auto client = Subprocess::Start(client_argv, flags.log_dir + "/iperf3_client.log");
  if (!client.ok()) return client.status();
  absl::StatusOr<std::string> out =
      (*client)->ReadAll(milliseconds(static_cast<int>(flags.iperf_seconds * 1000) + 20000));
  if (!out.ok()) return out.status();
  (void)(*client)->Wait(milliseconds(5000));
  (void)(*server)->Wait(milliseconds(5000));
  const Json j = Json::parse(*out, nullptr, false);
  if (j.is_discarded() || !j.contains("end") || !j["end"].contains("sum_received")) {
    return absl::InternalError(absl::StrCat(
        "iperf3 gave no result: ", j.is_object() && j.contains("error") ? j["error"].dump() : *out));
  }
  const Json& received = j["end"]["sum_received"];
  Iperf3 r;
  r.gbps = received.value("bits_per_second", 0.0) / 8e9;
  if (const Json& cpu = j["end"].value("cpu_utilization_percent", Json::object()); cpu.is_object()) {
    r.cores_busy = (cpu.value("host_total", 0.0) + cpu.value("remote_total", 0.0)) / 100;
    const double gb = received.value("bytes", 0.0) * 1e-9;
    if (gb > 0) r.core_seconds_per_gb = r.cores_busy * received.value("seconds", 0.0) / gb;
  }
  return r;
}

// The minimal parameter servers of bench/peers/ (zmq_ps.cc over ZeroMQ, grpc_ps.cc over bare
// gRPC), server and worker as two processes, pulling and pushing a model of `size_mb` the way (a)
// does: the kind of peer the target cites, and what gRPC itself allows a parameter server
// that sends whole messages, measured on this machine.
struct PeerPs {
  std::string name;  // zmq_ps or grpc_ps: the key in details
  std::string path;  // the executable; empty: not measured
  std::string setup;
};

std::vector<PeerPs> PeerPsList(const Flags& flags) {
  std::vector<PeerPs> peers;
  const std::string common =
      " parameter server and worker as two processes, one model, no sharding, no checks; weights "
      "and gradients sent without copying, the worker copies pulled weights into its buffer, the "
      "server applies w -= lr*g; server and worker bound to cores as our shard and learner are "
      "(taskset); the best round, measured in the same rounds as ours";
  if (!flags.zmq_ps.empty()) {
    peers.push_back({"zmq_ps", flags.zmq_ps,
                     "bench/peers/zmq_ps.cc: a minimal ZeroMQ (libzmq 4.3, REQ/REP, one TCP "
                     "connection)" + common});
  }
  if (!flags.grpc_ps.empty()) {
    peers.push_back({"grpc_ps", flags.grpc_ps,
                     "bench/peers/grpc_ps.cc: a minimal gRPC (generic API, raw bytes, one unary "
                     "call per pull and per push, whole messages, malloc tuned as ours)" + common});
  }
  return peers;
}

struct PeerPsResult {
  double pull_gbps = 0, push_gbps = 0, round_trip_gbps = 0, core_seconds_per_gb = 0;
  double page_faults_per_round_trip = 0;  // minor faults of both processes
  int iterations = 0;
};

// The argv that runs `argv` bound to `cpu` (util-linux's taskset), or `argv` itself.
std::vector<std::string> BoundTo(const std::optional<int>& cpu, std::vector<std::string> argv) {
  if (cpu.has_value()) argv.insert(argv.begin(), {"/usr/bin/taskset", "-c", std::to_string(cpu.value())});
  return argv;
}

absl::StatusOr<PeerPsResult> MeasurePeerPs(const Flags& flags, const PeerPs& peer, int size_mb) {
  const std::string bytes = std::to_string(static_cast<uint64_t>(size_mb) << 20);
  const std::string log = absl::StrCat(flags.log_dir, "/", peer.name, "_");
  // Placed as our one shard and its learner are.
  const Placement placement = PlaceProcesses(flags, 1);
  std::optional<int> server_cpu;
  if (!placement.shard_cpus.empty()) server_cpu = placement.shard_cpus[0];
  auto server = Subprocess::Start(BoundTo(server_cpu, {peer.path, "server", bytes}),
                                  absl::StrCat(log, "server_", size_mb, "mb.log"));
  if (!server.ok()) return server.status();
  absl::StatusOr<std::string> ready = (*server)->ReadLineStartingWith("READY ", milliseconds(10000));
  if (!ready.ok()) return absl::UnavailableError(peer.name + " server did not start; see its log");
  auto worker = Subprocess::Start(
      BoundTo(placement.learner_cpu, {peer.path, "worker", ready->substr(6), bytes, absl::StrCat(flags.seconds)}),
      absl::StrCat(log, "worker_", size_mb, "mb.log"));
  if (!worker.ok()) return worker.status();
  absl::StatusOr<std::string> line = (*worker)->ReadLineStartingWith(
      "RESULT ", milliseconds(static_cast<int>(flags.seconds * 1000) + 60000));
  if (!line.ok()) return absl::UnavailableError(peer.name + " worker gave no result; see its log");
  (void)(*worker)->Wait(milliseconds(5000));
  (void)(*server)->Wait(milliseconds(5000));
  PeerPsResult r;
  double cpu = 0, faults = 0;
  std::istringstream in(line->substr(7));
  in >> r.pull_gbps >> r.push_gbps >> r.round_trip_gbps >> r.iterations >> cpu >> faults;
  if (!in || r.iterations <= 0) {
    return absl::InternalError(absl::StrCat(peer.name, ": unreadable result: ", *line));
  }
  r.core_seconds_per_gb =
      cpu / (2.0 * static_cast<double>(uint64_t{1} << 20) * size_mb * r.iterations * 1e-9);
  r.page_faults_per_round_trip = faults / r.iterations;
  return r;
}

// ---- (b) small-message rate -----------------------------------------------------------------

struct PushRate {
  double pushes_per_second = 0;
  uint64_t pushes = 0;
  uint64_t shard_pushes = -1;  // the shard's own count (gRPC only)
};

// Runs `learners` pusher processes in `role` against `endpoints`; returns the summed rate.
absl::StatusOr<PushRate> RunPushers(const Flags& flags, const std::string& role, int learners,
                                    const std::vector<std::string>& endpoints) {
  std::vector<std::unique_ptr<Subprocess>> children;
  for (int i = 0; i < learners; ++i) {
    auto p = Subprocess::Start({SelfExecutable(), "--role=" + role,
                                "--endpoints=" + absl::StrJoin(endpoints, ","),
                                absl::StrCat("--push_seconds=", flags.push_seconds)},
                               absl::StrCat(flags.log_dir, "/", role, "_", learners, ".log"));
    if (!p.ok()) return p.status();
    children.push_back(std::move(*p));
  }
  for (auto& c : children) {
    absl::StatusOr<std::string> line = c->ReadLineStartingWith("READY", milliseconds(60000));
    if (!line.ok()) {
      return absl::UnavailableError(absl::StrCat(role, " did not get ready (", line.status().message(),
                                                 "); see ", flags.log_dir));
    }
  }
  for (auto& c : children) {
    if (absl::Status st = c->WriteLine("GO"); !st.ok()) return st;
  }
  PushRate r;
  for (auto& c : children) {
    absl::StatusOr<std::string> line = c->ReadLineStartingWith(
        "DONE ", milliseconds(static_cast<int>(flags.push_seconds * 1000) + 60000));
    if (!line.ok()) {
      return absl::InternalError(absl::StrCat(role, " failed (", line.status().message(),
                                              "); see ", flags.log_dir));
    }
    std::vector<std::string> parts = absl::StrSplit(*line, ' ');
    uint64_t n = 0;
    double s = 0;
    if (parts.size() != 3 || !absl::SimpleAtoi(parts[1], &n) || !absl::SimpleAtod(parts[2], &s) ||
        s <= 0) {
      return absl::InternalError(absl::StrCat(role, " printed '", *line, "'"));
    }
    r.pushes += n;
    r.pushes_per_second += static_cast<double>(n) / s;
    (void)c->Wait(milliseconds(10000));
  }
  return r;
}

absl::StatusOr<PushRate> MeasureGrpcPushRate(const Flags& flags, int learners) {
  absl::StatusOr<Shards> shards = StartShards(flags, 1, learners, absl::StrCat("push_l", learners));
  if (!shards.ok()) return shards.status();
  absl::StatusOr<PushRate> r = RunPushers(flags, "grpc_pusher", learners, shards->endpoints);
  if (!r.ok()) return r;
  server::ClientOptions o;
  o.endpoints = shards->endpoints;
  o.job_id = "transport";
  o.learner_id = -2;
  o.tensors = {{"gradient", 1024}};
  auto observer = server::PsClient::Connect(o);
  if (observer.ok()) {
    auto stats = (*observer)->Stats();
    if (stats.ok()) r->shard_pushes = stats->total.pushes;
  }
  return r;
}

absl::StatusOr<PushRate> MeasureTcpPushRate(const Flags& flags, int learners) {
  auto server = Subprocess::Start({SelfExecutable(), "--role=tcp_server"},
                                  flags.log_dir + "/tcp_server.log");
  if (!server.ok()) return server.status();
  absl::StatusOr<std::string> ready = (*server)->ReadLineStartingWith("READY ", milliseconds(10000));
  if (!ready.ok()) return absl::UnavailableError("the TCP peer server did not start");
  return RunPushers(flags, "tcp_pusher", learners, {"127.0.0.1:" + ready->substr(6)});
}

// ---- results --------------------------------------------------------------------------------

struct Run {
  Flags flags;
  std::string cpu = CpuModel(), date = Today();
  double load_before = LoadAverage();
  bool all_ok = true;
};

void WriteResult(Run& run, Json j) {
  j["command"] = run.flags.command;
  j["date"] = run.date;
  j["cpu"] = run.cpu;
  j["details"]["load_average_1m_before"] = run.load_before;
  j["details"]["cores"] = static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN));
  if (j["figure"].is_null() || j["peer_figure"].is_null()) run.all_ok = false;
  std::filesystem::create_directories(run.flags.results_dir);
  const std::string path = run.flags.results_dir + "/" + j["name"].get<std::string>() + ".json";
  std::ofstream out(path);
  out << j.dump(2) << "\n";
  std::cerr << "wrote " << path << "\n";
}

Json Ratio(double figure, double peer) {
  return figure > 0 && peer > 0 ? Json(figure / peer) : Json(nullptr);
}
Json FigureOrNull(double v) { return v > 0 ? Json(v) : Json(nullptr); }

void RunBandwidth(Run& run) {
  const Flags& f = run.flags;
  std::vector<Iperf3> iperf_runs;
  std::vector<std::string> iperf_errors;
  std::map<std::pair<int, int>, std::vector<Bandwidth>> ours;  // (size, shards) -> rounds
  std::map<std::pair<int, int>, std::string> errors;
  const std::vector<PeerPs> peers = PeerPsList(f);
  // (peer, size) -> rounds
  std::map<std::pair<std::string, int>, std::vector<PeerPsResult>> peer_ps;
  std::map<std::pair<std::string, int>, std::string> peer_ps_errors;
  // iperf3 runs as it would by itself and, when ours are bound to cores, bound the same way
  // (client on the learner's core, server on the shard's); the faster of the two is the peer.
  const Placement one_shard = PlaceProcesses(f, 1);
  std::vector<std::optional<std::pair<int, int>>> iperf_placements = {std::nullopt};
  if (one_shard.learner_cpu) iperf_placements.push_back({{*one_shard.learner_cpu, one_shard.shard_cpus[0]}});
  for (int round = 0; round < f.rounds; ++round) {
    for (const auto& cores : iperf_placements) {
      absl::StatusOr<Iperf3> peer = MeasureIperf3(f, cores);
      if (peer.ok()) {
        peer->round = round;
        peer->bound = cores.has_value();
        iperf_runs.push_back(*peer);
        std::cerr << "round " << round << ": iperf3" << (cores ? " (bound, -A)" : "") << " "
                  << peer->gbps << " GB/s, " << peer->core_seconds_per_gb << " core-s/GB\n";
      } else {
        iperf_errors.push_back(std::string(peer.status().message()));
        std::cerr << "iperf3: " << peer.status() << "\n";
      }
    }
    for (int size : f.sizes_mb) {
      for (const PeerPs& p : peers) {
        absl::StatusOr<PeerPsResult> z = MeasurePeerPs(f, p, size);
        if (z.ok()) {
          peer_ps[{p.name, size}].push_back(*z);
          std::cerr << "round " << round << ": " << size << " MB, " << p.name << ": pull "
                    << z->pull_gbps << " GB/s, push " << z->push_gbps << " GB/s, round trip "
                    << z->round_trip_gbps << " GB/s, " << z->core_seconds_per_gb
                    << " core-s/GB\n";
        } else {
          peer_ps_errors[{p.name, size}] = std::string(z.status().message());
          std::cerr << size << " MB, " << p.name << ": " << z.status() << "\n";
        }
      }
      for (int s : f.shards) {
        absl::StatusOr<Bandwidth> b = MeasureBandwidth(f, s, size);
        if (!b.ok()) {
          errors[{size, s}] = std::string(b.status().message());
          std::cerr << size << " MB, " << s << " shard(s): " << b.status() << "\n";
          continue;
        }
        std::cerr << "round " << round << ": " << size << " MB, " << s << " shard(s): pull "
                  << b->pull_gbps << " GB/s, push " << b->push_gbps << " GB/s, round trip "
                  << b->round_trip_gbps << " GB/s (" << b->iterations << " iterations), "
                  << b->core_seconds_per_gb << " core-s/GB, " << b->cores_busy
                  << " cores busy\n";
        b->round = round;
        ours[{size, s}].push_back(*b);
      }
    }
  }
  Iperf3 peer_run;
  for (const Iperf3& r : iperf_runs) {
    if (r.gbps > peer_run.gbps) peer_run = r;
  }
  const double peer = peer_run.gbps;
  std::vector<double> iperf_gbps, iperf_unbound_gbps, iperf_bound_gbps;
  std::vector<double> iperf_round_best(f.rounds, 0.0);  // per round, the faster iperf3 (0: none)
  for (const Iperf3& r : iperf_runs) {
    iperf_gbps.push_back(r.gbps);
    (r.bound ? iperf_bound_gbps : iperf_unbound_gbps).push_back(r.gbps);
    iperf_round_best[r.round] = std::max(iperf_round_best[r.round], r.gbps);
  }
  const double cores = static_cast<double>(sysconf(_SC_NPROCESSORS_ONLN));
  for (int size : f.sizes_mb) {
    for (int s : f.shards) {
      const std::vector<Bandwidth>& runs = ours[{size, s}];
      Bandwidth best;
      Json all = Json::array();
      for (const Bandwidth& b : runs) {
        if (b.round_trip_gbps > best.round_trip_gbps) best = b;
        all.push_back({{"pull_gbps", b.pull_gbps}, {"push_gbps", b.push_gbps},
                       {"round_trip_gbps", b.round_trip_gbps}, {"iterations", b.iterations},
                       {"core_seconds_per_gb", b.core_seconds_per_gb},
                       {"cores_busy", b.cores_busy}});
      }
      // Each round's figure against the iperf3 of the same round (the faster placement): one
      // sample a side, so that an iperf3 spike in another round does not set the peer.
      std::vector<double> paired;
      for (const Bandwidth& b : runs) {
        if (iperf_round_best[b.round] > 0) paired.push_back(b.round_trip_gbps / iperf_round_best[b.round]);
      }
      Json details = {
          {"model_bytes", uint64_t{static_cast<uint64_t>(size)} << 20},
          {"paired_ratios", paired},
          {"paired_ratio_median", paired.empty() ? Json(nullptr) : Json(Median(paired))},
          {"tensors", kTensors},
          {"chunk_elements", f.chunk_size},
          {"pull_part_bytes", f.pull_part_kb >= 0 ? static_cast<uint64_t>(f.pull_part_kb) << 10
                                                  : server::ClientOptions().pull_part_bytes},
          {"push_part_bytes", f.push_part_kb >= 0 ? static_cast<uint64_t>(f.push_part_kb) << 10
                                                  : server::ClientOptions().push_part_bytes},
          {"shards", s},
          {"pull_gbps", best.pull_gbps},
          {"push_gbps", best.push_gbps},
          {"pull_ratio", Ratio(best.pull_gbps, peer)},
          {"push_ratio", Ratio(best.push_gbps, peer)},
          {"pull_ms_median", best.pull_ms},
          {"push_ms_median", best.push_ms},
          {"iterations", best.iterations},
          {"warmup_round_trips", kWarmupRoundTrips},
          {"rounds", all},
          {"iperf3_gbps_rounds", iperf_gbps},
          {"iperf3_unbound_gbps_rounds", iperf_unbound_gbps},
          {"iperf3_bound_gbps_rounds", iperf_bound_gbps},
          {"placement", PlaceProcesses(f, s).Describe()},
          // Where the time goes: both sides are CPU-bound on a small machine, so the CPU each
          // spends per GB bounds the ratio. ceiling = (all cores busy / our CPU per GB) / iperf3.
          {"cpu_core_seconds_per_gb", FigureOrNull(best.core_seconds_per_gb)},
          {"cores_busy", FigureOrNull(best.cores_busy)},
          {"iperf3_cpu_core_seconds_per_gb", FigureOrNull(peer_run.core_seconds_per_gb)},
          {"iperf3_cores_busy", FigureOrNull(peer_run.cores_busy)},
          {"cpu_per_gb_vs_iperf3", Ratio(best.core_seconds_per_gb, peer_run.core_seconds_per_gb)},
          {"ratio_ceiling_all_cores_busy",
           best.core_seconds_per_gb > 0 ? Ratio(cores / best.core_seconds_per_gb, peer)
                                        : Json(nullptr)},
          {"setup",
           "shards: separate `orrery server` processes (async, lambda=1) on 127.0.0.1; learner: "
           "this process, PsClient (server/client.h), FP32 payloads; placement as in `placement`; "
           "iperf3: -s -1 and -c 127.0.0.1 -J, one TCP stream, two processes, unbound and (when "
           "ours are bound) bound with -A like our learner and one shard, the faster counting"},
          {"statistic",
           "per round, the median over pull+push iterations of 2*model_bytes/(pull+push time); "
           "the best round (likewise the best iperf3 round, bound or not); paired_ratios: each "
           "round's figure over the faster iperf3 of that round, and their median"}};
      for (const PeerPs& p : peers) {
        PeerPsResult z;
        for (const PeerPsResult& r : peer_ps[{p.name, size}]) {
          if (r.round_trip_gbps > z.round_trip_gbps) z = r;
        }
        Json zj = {{"round_trip_gbps", FigureOrNull(z.round_trip_gbps)},
                   {"pull_gbps", FigureOrNull(z.pull_gbps)},
                   {"push_gbps", FigureOrNull(z.push_gbps)},
                   {"cpu_core_seconds_per_gb", FigureOrNull(z.core_seconds_per_gb)},
                   {"page_faults_per_round_trip", z.page_faults_per_round_trip},
                   {"ratio_to_iperf3", Ratio(z.round_trip_gbps, peer)},
                   {"ours_over_" + p.name, Ratio(best.round_trip_gbps, z.round_trip_gbps)},
                   {"setup", p.setup}};
        if (auto it = peer_ps_errors.find({p.name, size}); it != peer_ps_errors.end()) {
          zj["error"] = it->second;
        }
        details[p.name] = zj;
      }
      std::string error;
      if (auto it = errors.find({size, s}); it != errors.end()) error = it->second;
      if (!iperf_errors.empty()) error += (error.empty() ? "" : "; ") + ("iperf3: " + iperf_errors[0]);
      if (!error.empty()) details["error"] = error;
      WriteResult(run, {{"name", absl::StrCat("transport_pushpull_", size, "mb_s", s)},
                        {"figure", FigureOrNull(best.round_trip_gbps)},
                        {"unit", "GB/s of payload (pull + push)"},
                        {"peer", "iperf3 3.12 loopback, 1 stream (Debian)"},
                        {"peer_figure", FigureOrNull(peer)},
                        {"ratio", Ratio(best.round_trip_gbps, peer)},
                        {"target_ratio", 0.8},
                        {"details", details}});
    }
  }
}

void RunPushRate(Run& run) {
  const Flags& f = run.flags;
  for (int learners : f.learners) {
    std::vector<PushRate> ours, peer;
    std::string error;
    for (int round = 0; round < f.rounds; ++round) {
      absl::StatusOr<PushRate> g = MeasureGrpcPushRate(f, learners);
      absl::StatusOr<PushRate> t = MeasureTcpPushRate(f, learners);
      if (g.ok()) ours.push_back(*g); else error = std::string(g.status().message());
      if (t.ok()) peer.push_back(*t); else error = "TCP peer: " + std::string(t.status().message());
      std::cerr << "round " << round << ": " << learners << " learner(s): "
                << (g.ok() ? g->pushes_per_second : 0) << " pushes/s; raw TCP "
                << (t.ok() ? t->pushes_per_second : 0) << "\n";
    }
    auto best = [](const std::vector<PushRate>& v) {
      PushRate b;
      for (const PushRate& r : v) if (r.pushes_per_second > b.pushes_per_second) b = r;
      return b;
    };
    const PushRate o = best(ours), p = best(peer);
    Json rounds = Json::array();
    for (size_t i = 0; i < std::max(ours.size(), peer.size()); ++i) {
      rounds.push_back({{"ours", i < ours.size() ? Json(ours[i].pushes_per_second) : Json()},
                        {"shard_counted_pushes", i < ours.size() ? Json(ours[i].shard_pushes) : Json()},
                        {"pushes", i < ours.size() ? Json(ours[i].pushes) : Json()},
                        {"raw_tcp", i < peer.size() ? Json(peer[i].pushes_per_second) : Json()}});
    }
    Json details = {
        {"learners", learners},
        {"gradient_bytes", 4096},
        {"shards", 1},
        {"seconds_per_run", f.push_seconds},
        {"rounds", rounds},
        {"setup",
         "one `orrery server` process (async, lambda=learners); each learner a separate process "
         "with its own PsClient (connection), one Pull then Push(step++) back to back, each push "
         "waiting for its answer; peer: the same number of processes each sending 4096 bytes and "
         "waiting for an 8-byte acknowledgement on one blocking TCP socket (TCP_NODELAY) to a "
         "thread-per-connection server process"},
        {"statistic", "sum over learners of pushes/elapsed; the best of the rounds for each side"}};
    if (learners == 16) details["target_pushes_per_second"] = 10000;
    if (!error.empty()) details["error"] = error;
    WriteResult(run, {{"name", absl::StrCat("transport_push_rate_4kb_l", learners)},
                      {"figure", FigureOrNull(o.pushes_per_second)},
                      {"unit", "pushes/s (4 KB gradient, all learners)"},
                      {"peer", "raw TCP 4 KB request + 8 B ack, same learner processes"},
                      {"peer_figure", FigureOrNull(p.pushes_per_second)},
                      {"ratio", Ratio(o.pushes_per_second, p.pushes_per_second)},
                      {"target_ratio", nullptr},
                      {"details", details}});
  }
}

// (c) The client's default parts against whole messages, one shard, pairs alternating which goes
// first so a drift of the machine's speed falls on both alike. Figure and peer: the medians over
// the pairs of each side's round-trip GB/s.
void RunPartsVsWhole(Run& run) {
  const Flags& f = run.flags;
  // The parts side uses the client's defaults, which details records, whatever --*_part_kb say.
  Flags parts = f, whole = f;
  parts.pull_part_kb = parts.push_part_kb = -1;
  whole.pull_part_kb = whole.push_part_kb = 0;
  for (int size : f.sizes_mb) {
    std::vector<Bandwidth> with_parts, with_whole;
    std::string error;
    for (int round = 0; round < f.parts_rounds && error.empty(); ++round) {
      for (int k = 0; k < 2; ++k) {
        const bool parts_now = (round + k) % 2 == 0;
        absl::StatusOr<Bandwidth> b = MeasureBandwidth(parts_now ? parts : whole, 1, size);
        if (!b.ok()) {
          error = absl::StrCat(parts_now ? "parts: " : "whole: ", b.status().message());
          break;
        }
        std::cerr << "parts vs whole, " << size << " MB, round " << round << ": "
                  << (parts_now ? "parts" : "whole") << " pull " << b->pull_gbps << " GB/s, push "
                  << b->push_gbps << " GB/s, round trip " << b->round_trip_gbps << " GB/s\n";
        (parts_now ? with_parts : with_whole).push_back(*b);
      }
    }
    auto median = [](const std::vector<Bandwidth>& v, double Bandwidth::*field) {
      std::vector<double> x;
      for (const Bandwidth& b : v) x.push_back(b.*field);
      return Median(x);
    };
    auto side = [&](const std::vector<Bandwidth>& v) {
      Json rounds = Json::array();
      for (const Bandwidth& b : v) {
        rounds.push_back({{"pull_gbps", b.pull_gbps}, {"push_gbps", b.push_gbps},
                          {"round_trip_gbps", b.round_trip_gbps},
                          {"core_seconds_per_gb", b.core_seconds_per_gb}});
      }
      return Json{{"pull_gbps_median", median(v, &Bandwidth::pull_gbps)},
                  {"push_gbps_median", median(v, &Bandwidth::push_gbps)},
                  {"core_seconds_per_gb_median", median(v, &Bandwidth::core_seconds_per_gb)},
                  {"rounds", rounds}};
    };
    const double ours = median(with_parts, &Bandwidth::round_trip_gbps);
    const double peer = median(with_whole, &Bandwidth::round_trip_gbps);
    Json details = {
        {"model_bytes", uint64_t{static_cast<uint64_t>(size)} << 20},
        {"shards", 1},
        {"pull_part_bytes", server::ClientOptions().pull_part_bytes},
        {"push_part_bytes", server::ClientOptions().push_part_bytes},
        {"parts", side(with_parts)},
        {"whole", side(with_whole)},
        {"pull_speedup", Ratio(median(with_parts, &Bandwidth::pull_gbps),
                               median(with_whole, &Bandwidth::pull_gbps))},
        {"push_speedup", Ratio(median(with_parts, &Bandwidth::push_gbps),
                               median(with_whole, &Bandwidth::push_gbps))},
        {"setup", "as transport_pushpull_*_s1, in pairs: the client's default parts, then whole "
                  "messages (pull_part_bytes = push_part_bytes = 0), or the other way round on "
                  "odd rounds; a fresh shard process for each"},
        {"statistic", "median over the rounds of each side's round-trip GB/s (per round, the "
                      "median over iterations, as in transport_pushpull_*)"}};
    if (!error.empty()) details["error"] = error;
    WriteResult(run, {{"name", absl::StrCat("transport_parts_vs_whole_", size, "mb_s1")},
                      {"figure", FigureOrNull(ours)},
                      {"unit", "GB/s of payload (pull + push), in parts"},
                      {"peer", "the same client and shard, whole messages"},
                      {"peer_figure", FigureOrNull(peer)},
                      {"ratio", Ratio(ours, peer)},
                      {"target_ratio", nullptr},
                      {"details", details}});
  }
}

std::vector<int> IntList(const std::string& text) {
  std::vector<int> out;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    int v = 0;
    if (absl::SimpleAtoi(part, &v) && v > 0) out.push_back(v);
  }
  return out;
}

}  // namespace
}  // namespace orrery::bench

int main(int argc, char** argv) {
  using namespace orrery::bench;
  // As `orrery` does (cli/main.cc): this process is the learner here, and Debian's abseil would
  // otherwise keep its lock-order graph for every gRPC and client Mutex, which `orrery learner`
  // does not.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  if (argc >= 2 && std::string(argv[1]) == "--role=server") {
    // The shard role: the flags of `orrery server` that StartShards passes, as "--flag value".
    orrery::server::ServerOptions o;
    for (int i = 2; i + 1 < argc; i += 2) {
      const std::string key = argv[i], value = argv[i + 1];
      if (key == "--listen") o.listen_address = value;
      else if (key == "--shard") o.shard_index = std::atoi(value.c_str());
      else if (key == "--shards") o.num_shards = std::atoi(value.c_str());
      else if (key == "--job") o.job_id = value;
      else if (key == "--protocol") o.protocol = value;
      else if (key == "--learners") o.learners = std::atoi(value.c_str());
      else if (key == "--lr") o.lr = static_cast<float>(std::atof(value.c_str()));
      else if (key == "--cpus") {
        absl::StatusOr<std::vector<int>> cpus = orrery::ParseCpuList(value);
        absl::Status st = cpus.ok() ? orrery::BindProcessToCpus(*cpus) : cpus.status();
        if (!st.ok()) {
          std::cerr << "bench_transport --role=server: --cpus: " << st.message() << "\n";
          return 2;
        }
      } else {
        std::cerr << "bench_transport --role=server: unknown flag " << key << "\n";
        return 2;
      }
    }
    return orrery::server::RunServer(o);
  }
  Flags flags;
  std::string role;
  PusherOptions pusher;
  std::ostringstream command;
  command << argv[0];
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const size_t eq = arg.find('=');
    const std::string key = arg.substr(0, eq), value = eq == std::string::npos ? "" : arg.substr(eq + 1);
    if (key != "--command") command << " " << arg;
    if (key == "--role") role = value;
    else if (key == "--endpoints") pusher.endpoints = absl::StrSplit(value, ',', absl::SkipEmpty());
    else if (key == "--orrery") flags.orrery = value;
    else if (key == "--zmq_ps") flags.zmq_ps = value;
    else if (key == "--grpc_ps") flags.grpc_ps = value;
    else if (key == "--results_dir") flags.results_dir = value;
    else if (key == "--command") flags.command = value;
    else if (key == "--rounds") flags.rounds = std::max(1, std::atoi(value.c_str()));
    else if (key == "--seconds") flags.seconds = std::atof(value.c_str());
    else if (key == "--push_seconds") flags.push_seconds = pusher.seconds = std::atof(value.c_str());
    else if (key == "--iperf_seconds") flags.iperf_seconds = std::atof(value.c_str());
    else if (key == "--sizes_mb") flags.sizes_mb = IntList(value);
    else if (key == "--shards") flags.shards = IntList(value);
    else if (key == "--learners") flags.learners = IntList(value);
    else if (key == "--pull_part_kb") flags.pull_part_kb = std::atoll(value.c_str());
    else if (key == "--push_part_kb") flags.push_part_kb = std::atoll(value.c_str());
    else if (key == "--parts_rounds") flags.parts_rounds = std::max(0, std::atoi(value.c_str()));
    else if (key == "--bind_cpus") flags.bind_cpus = value != "0" && value != "false";
    else if (key == "--chunk_size") flags.chunk_size = static_cast<uint32_t>(std::atoi(value.c_str()));
    else {
      std::cerr << "bench_transport: unknown flag " << arg << " (see the header of bench_transport.cc)\n";
      return 2;
    }
  }
  if (role == "grpc_pusher") return RunGrpcPusher(pusher);
  if (role == "tcp_pusher") return RunTcpPusher(pusher);
  if (role == "tcp_server") return RunTcpAckServer(pusher.elements * sizeof(float));
  if (!role.empty()) {
    std::cerr << "bench_transport: unknown role " << role << "\n";
    return 2;
  }
  if (flags.command.empty()) flags.command = command.str();
  char log_template[] = "/tmp/bench_transport.XXXXXX";
  if (mkdtemp(log_template) == nullptr) {
    std::perror("mkdtemp");
    return 1;
  }
  flags.log_dir = log_template;
  std::cerr << "bench_transport: process logs in " << flags.log_dir << "\n";
  if (absl::StatusOr<std::vector<int>> cores = orrery::AllowedCpus(); cores.ok()) flags.cores = *std::move(cores);
  Run run{flags};
  if (!flags.sizes_mb.empty() && !flags.shards.empty()) RunBandwidth(run);
  if (!flags.learners.empty()) RunPushRate(run);
  if (!flags.sizes_mb.empty() && flags.parts_rounds > 0) RunPartsVsWhole(run);
  return run.all_ok ? 0 : 1;
}
