#include "server/client.h"

#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <thread>

#include <grpcpp/completion_queue.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/impl/codegen/proto_utils.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>
#include <grpcpp/support/proto_buffer_reader.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "glog/logging.h"
#include "base/status_macros.h"
#include "parameter_server.pb.h"
#include "server/aliased_serializer.h"
#include "server/memory_reuse.h"
#include "server/pull_decoder.h"
#include "server/push_streams.h"
#include "server/sharding.h"
#include "server/status_util.h"
#include "server/tensor_codec.h"

namespace orrery::server {

// Full method names of the calls (see parameter_server.proto). Every call goes through the
// byte-level stub: requests are serialised by us (Push with its payloads aliased) and answers
// parsed by us (Pull straight into the caller's buffer).
const char kRegisterMethod[] = "/orrery.proto.ParameterServer/Register";
const char kInitMethod[] = "/orrery.proto.ParameterServer/Init";
const char kPullMethod[] = "/orrery.proto.ParameterServer/Pull";
const char kPushMethod[] = "/orrery.proto.ParameterServer/Push";
// How long Push waits for gRPC to let go of the gradient's memory before it closes the
// connections (it lets go within microseconds of the answers unless a connection is stuck).
constexpr absl::Duration kReleaseWait = absl::Seconds(1);
const char kStatsMethod[] = "/orrery.proto.ParameterServer/Stats";
const char kLeaveMethod[] = "/orrery.proto.ParameterServer/Leave";

// What one call to a shard sends and where its answer goes; both must outlive the call.
struct CallIo {
  const char* method = nullptr;
  const grpc::ByteBuffer* request = nullptr;
  grpc::ByteBuffer* response = nullptr;
};
using IoFn = std::function<CallIo(int shard)>;
// With several shards and at least this many bytes of the model per shard, each shard's pull and
// push run on a thread of their own (Impl::spread()).
constexpr size_t kSpreadBytes = 1 << 20;
namespace {
// Runs fn(0) on the calling thread and fn(1) ... fn(count - 1) each on a thread of its own;
// returns when all have returned.
void OnThreadEach(size_t count, const std::function<void(size_t)>& fn) {
  std::vector<std::thread> threads;
  for (size_t k = 1; k < count; ++k) threads.emplace_back(fn, k);
  if (count > 0) fn(0);
  for (std::thread& t : threads) t.join();
}
}  // namespace
// Parts of one shard's pull on the wire at once: one being received while the last is decoded.
constexpr int kPullPartsInFlight = 2;
// Runs on the calling thread when shard `shard` answered OK; may turn the answer into an error.
using OnOkFn = std::function<absl::Status(int shard)>;
// The same for pulls in parts (PsClient::Pull): how many parts shard `shard` answers in, the
// call of one part, and what to do when it answered OK (on the thread that drives the shard).
using PartsFn = std::function<int(int shard)>;
using PartIoFn = std::function<CallIo(int shard, int part)>;
using PartOkFn = std::function<absl::Status(int shard, int part)>;

template <typename Message>
grpc::ByteBuffer ToBytes(const Message& m) {
  grpc::ByteBuffer bytes;
  bool own = false;
  (void)grpc::SerializationTraits<Message>::Serialize(m, &bytes, &own);
  return bytes;
}

template <typename Message>
absl::Status FromBytes(grpc::ByteBuffer* bytes, Message* m) {
  if (!grpc::SerializationTraits<Message>::Deserialize(bytes, m).ok()) {
    return absl::InternalError(absl::StrCat("the shard's answer is not a ", m->GetTypeName()));
  }
  return absl::OkStatus();
}

double ShardStats::staleness_mean() const {
  uint64_t n = 0;
  for (uint64_t b : staleness_histogram) n += b;
  return n == 0 ? 0.0 : staleness_sum / static_cast<double>(n);
}

double ShardStats::gradient_age_mean() const {
  return gradient_age_count == 0 ? 0.0 : gradient_age_sum / static_cast<double>(gradient_age_count);
}

// Shuts down (SHUT_RDWR) every TCP socket of this process connected to `endpoint` (host:port):
// gRPC then sees its connection fail. Also those of other clients in this process to the same
// shard (which reconnect and retry, as after a shard restart). Returns how many.
int ShutDownSocketsTo(const std::string& endpoint) {
  const size_t colon = endpoint.rfind(':');
  if (colon == std::string::npos) return 0;
  std::string host = endpoint.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (getaddrinfo(host.c_str(), endpoint.c_str() + colon + 1, &hints, &found) != 0) return 0;
  auto same = [found](const sockaddr_storage& peer) {
    for (const addrinfo* a = found; a != nullptr; a = a->ai_next) {
      if (a->ai_family == AF_INET && peer.ss_family == AF_INET6) {
        // gRPC's sockets are IPv6 ones, an IPv4 peer mapped (::ffff:a.b.c.d).
        const auto* x = reinterpret_cast<const sockaddr_in*>(a->ai_addr);
        const auto* y = reinterpret_cast<const sockaddr_in6*>(&peer);
        if (IN6_IS_ADDR_V4MAPPED(&y->sin6_addr) && x->sin_port == y->sin6_port &&
            std::memcmp(&x->sin_addr, &y->sin6_addr.s6_addr[12], 4) == 0) {
          return true;
        }
      }
      if (a->ai_family != peer.ss_family) continue;
      if (peer.ss_family == AF_INET) {
        const auto* x = reinterpret_cast<const sockaddr_in*>(a->ai_addr);
        const auto* y = reinterpret_cast<const sockaddr_in*>(&peer);
        if (x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr) return true;
      } else if (peer.ss_family == AF_INET6) {
        const auto* x = reinterpret_cast<const sockaddr_in6*>(a->ai_addr);
        const auto* y = reinterpret_cast<const sockaddr_in6*>(&peer);
        if (x->sin6_port == y->sin6_port && std::memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(in6_addr)) == 0) {
          return true;
        }
      }
    }
    return false;
  };
  int shut = 0;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd", ec)) {
    int fd = -1;
    if (!absl::SimpleAtoi(entry.path().filename().string(), &fd)) continue;
    struct stat st {};
    if (fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode)) continue;
    sockaddr_storage peer{};
    socklen_t len = sizeof(peer);
    if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &len) != 0 || !same(peer)) continue;
    if (shutdown(fd, SHUT_RDWR) == 0) ++shut;
  }
  freeaddrinfo(found);
  return shut;
}

class PsClient::Impl {
 public:
  Impl(ClientOptions options, ShardPlan plan, std::shared_ptr<grpc::ChannelCredentials> credentials)
      : options_(std::move(options)),
        plan_(std::move(plan)),
        spread_(options_.endpoints.size() > 1 &&
                plan_.total_elements() * BytesPerElement() / options_.endpoints.size() >= kSpreadBytes),
        credentials_(std::move(credentials)) {
    chunk_versions_.assign(plan_.chunks().size(), 0);
    Connect();
  }
  // Streams first: they hold calls on the channels below. Every Round has drained its calls.
  ~Impl() {
    push_groups_.clear();
    void* tag = nullptr;
    bool ok = false;
    for (grpc::CompletionQueue* cq : {&cq_, &drive_cq_}) {
      cq->Shutdown();
      while (cq->Next(&tag, &ok)) {
      }
    }
  }

  // Closes every connection (and push stream) and opens new ones: gRPC then lets go of whatever
  // it still held to send on the old ones. Only between calls.
  void ResetConnections() {
    // gRPC finishes no operation of a call whose bytes wait on a connection the shard stopped
    // reading (not even once cancelled), and the connection lives as long as its calls: so the
    // sockets are shut down under it first. That fails the write, and gRPC lets go of the rest.
    ShutDownSockets();
    push_groups_.clear();
    generic_stubs_.clear();
    channels_.clear();  // each client has connections of its own (a local subchannel pool)
    Connect();
  }

  // Shuts down this process's sockets to the shards (ShutDownSocketsTo).
  void ShutDownSockets() const {
    for (const std::string& endpoint : options_.endpoints) ShutDownSocketsTo(endpoint);
  }

  // Polls this client's connections (and push streams, so that cancelled ones finish and let go
  // of their calls) until `done` returns true or `deadline` passes; whether it did.
  bool DriveUntil(const std::function<bool()>& done, absl::Time deadline) {
    while (!done()) {
      const absl::Time now = absl::Now();
      if (now >= deadline) return false;
      const absl::Time until = std::min(deadline, now + absl::Milliseconds(1));
      if (!push_groups_.empty()) {
        // Each group's queue in turn, for an equal share of the slice.
        const absl::Duration share = (until - now) / static_cast<int64_t>(push_groups_.size());
        for (size_t g = 0; g < push_groups_.size(); ++g) {
          push_groups_[g]->Poll(now + share * static_cast<int64_t>(g + 1));
        }
      } else {
        void* tag = nullptr;
        bool ok = false;
        // An empty queue: polling it serves the connections' events, and returns no tag.
        drive_cq_.AsyncNext(&tag, &ok, absl::ToChronoTime(until));
      }
    }
    return true;
  }

  // Opens a channel (and push stream) per shard.
  void Connect() {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(static_cast<int>(options_.max_message_bytes));
    args.SetMaxSendMessageSize(static_cast<int>(options_.max_message_bytes));
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // each client its own connections
    // A shard restarted by its supervisor is back within about 100 ms: try it again that soon
    // (gRPC's default waits 1 s, then longer), and every 2 s at most while it stays away.
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
    for (const std::string& endpoint : options_.endpoints) {
      channels_.push_back(grpc::CreateCustomChannel(endpoint, credentials_, args));
      generic_stubs_.push_back(std::make_unique<grpc::GenericStub>(channels_.back()));
    }
    if (options_.push_streams) {
      // A stream lives (under its call deadline) far longer than a push may take, and is
      // replaced before a push could outlive it.
      auto group = [this](std::vector<grpc::GenericStub*> stubs) {
        return std::make_unique<PushStreams>(std::move(stubs),
                                             std::max(absl::Minutes(10), 4 * options_.rpc_timeout),
                                             options_.rpc_timeout, [this] { ShutDownSockets(); });
      };
      if (spread_) {
        for (const auto& g : generic_stubs_) push_groups_.push_back(group({g.get()}));
      } else {
        std::vector<grpc::GenericStub*> stubs;
        for (const auto& g : generic_stubs_) stubs.push_back(g.get());
        push_groups_.push_back(group(std::move(stubs)));
      }
    }
  }

  const ClientOptions& options() const { return options_; }
  const ShardPlan& plan() const { return plan_; }
  int num_shards() const { return static_cast<int>(generic_stubs_.size()); }
  size_t BytesPerElement() const { return options_.wire == proto::FIXED16 ? 2 : 4; }
  // Whether each shard's pulls and pushes run on a thread of their own (the caller's thread takes
  // the first shard): with several shards and answers so large that receiving and decoding them,
  // or sending them, one shard after another on one thread would leave a core idle.
  bool spread() const { return spread_; }

  // Whether pushes to shard s go on its push stream (push streams are on, and the shard has the
  // method), and if so makes sure it has one: true in `*fresh` when it was opened just now, so
  // that the next message on it is its first and must carry the job's credentials.
  bool OpenPushStream(int s, bool* fresh) {
    if (push_groups_.empty()) return false;
    PushStreams& group = *push_groups_[spread_ ? s : 0];
    const int slot = spread_ ? 0 : s;
    if (!group.Supported(slot)) return false;
    *fresh = group.Open(slot);
    return true;
  }

  // PushStreams::Push on the streams of `shards`, opened with OpenPushStream; with spread(),
  // each shard's on a thread of its own. One result per shards[k].
  std::vector<PushStreams::Result> PushOnStreams(const std::vector<int>& shards, const std::vector<int>& parts,
                                                 const PushStreams::PartSource& source, int64_t step,
                                                 absl::Time deadline) {
    if (!spread_) return push_groups_[0]->Push(shards, parts, source, step, deadline);
    std::vector<PushStreams::Result> results(shards.size());
    auto run = [&](size_t k) {
      auto part_of_k = [&source, k](size_t, int part) { return source(k, part); };
      results[k] = push_groups_[shards[k]]->Push({0}, {parts[k]}, part_of_k, step, deadline)[0];
    };
    OnThreadEach(shards.size(), run);
    return results;
  }
  std::vector<int> AllShards() const {
    std::vector<int> all(generic_stubs_.size());
    for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<int>(i);
    return all;
  }

  // How a round reacts to one shard's hard failure.
  enum class OnFailure {
    kCancelRest,  // the others' answers are useless now (pulls, registration)
    kLetFinish,   // each shard judges its own part (pushes): every shard's count stays exact
  };

  // Calls `shards` concurrently, retrying those that answer UNAVAILABLE with backoff until the
  // retry budget is spent. Returns one status per shard index (OK for shards not called).
  std::vector<absl::Status> Call(std::vector<int> shards, absl::Duration timeout,
                                 const IoFn& io, const OnOkFn& on_ok = nullptr,
                                 OnFailure on_failure = OnFailure::kCancelRest) {
    return Retrying(std::move(shards), [&](const std::vector<int>& these) {
      return Round(these, timeout, io, on_ok, on_failure);
    });
  }

  // Call for pulls: shard s answers in parts(s) calls (PullRequest.part/parts), at most
  // kPullPartsInFlight of them at a time, and on_ok(s, part) decodes each part on arrival while
  // the next is on the wire. With `spread`, each shard's calls run on a thread of their own (the
  // caller's thread takes the first), for answers so large that receiving and decoding them one
  // after another on one thread would leave a core idle. The first hard failure cancels the rest.
  std::vector<absl::Status> CallParts(std::vector<int> shards, absl::Duration timeout,
                                      const PartsFn& parts, const PartIoFn& io,
                                      const PartOkFn& on_ok, bool spread) {
    return Retrying(std::move(shards), [&](const std::vector<int>& these) {
      return PartsRound(these, timeout, parts, io, on_ok, spread);
    });
  }

  // First failure among `statuses`, naming the shard. A shard's real error comes before the
  // CANCELLED of the calls that Round cancelled because of it.
  absl::Status Combine(const std::vector<absl::Status>& statuses, absl::string_view what) const {
    for (int pass = 0; pass < 2; ++pass) {
      for (size_t i = 0; i < statuses.size(); ++i) {
        if (statuses[i].ok() || (pass == 0 && absl::IsCancelled(statuses[i]))) continue;
        return absl::Status(statuses[i].code(),
                            absl::StrCat(what, " on shard ", i, " (", options_.endpoints[i],
                                         "): ", statuses[i].message()));
      }
    }
    return absl::OkStatus();
  }

  std::vector<uint64_t> chunk_versions_;  // per plan chunk, from the last pull
  bool pulled_ = false;

 private:
  // Runs `round` on `shards`, then again on those that answered UNAVAILABLE, with backoff, until
  // the retry budget is spent. One status per shard index (OK for shards not called).
  template <typename RoundFn>
  std::vector<absl::Status> Retrying(std::vector<int> shards, const RoundFn& round) {
    std::vector<absl::Status> result(generic_stubs_.size());
    const absl::Time give_up = absl::Now() + options_.retry_budget;
    absl::Duration backoff = absl::Milliseconds(50);
    while (true) {
      const std::vector<absl::Status> statuses = round(shards);
      std::vector<int> again;
      for (size_t k = 0; k < shards.size(); ++k) {
        result[shards[k]] = statuses[k];
        if (absl::IsUnavailable(statuses[k])) again.push_back(shards[k]);
      }
      if (again.empty() || absl::Now() + backoff > give_up) break;
      AwaitRetry(again, backoff);
      backoff = std::min(2 * backoff, absl::Seconds(2));
      shards = std::move(again);
    }
    return result;
  }

  // Waits out `backoff` before `shards` are called again. This client's calls are driven by the
  // calling thread, so between calls nothing polls a channel that is reconnecting: gRPC's
  // backup poller alone would notice a restarted shard's answer to the connection, seconds
  // later (measured: learners resumed about 10 s after a shard's 100 ms restart). So the wait
  // drives the reconnection of channels that are not connected and ends once they all are; a
  // shard that answered UNAVAILABLE over a working connection still gets the whole backoff.
  void AwaitRetry(const std::vector<int>& shards, absl::Duration backoff) {
    const absl::Time deadline = absl::Now() + backoff;
    bool reconnecting = false;
    for (int s : shards) {
      if (channels_[s]->GetState(/*try_to_connect=*/true) == GRPC_CHANNEL_READY) continue;
      reconnecting = true;
      channels_[s]->WaitForConnected(absl::ToChronoTime(deadline));
    }
    if (!reconnecting) absl::SleepFor(deadline - absl::Now());
  }

  // A shard's CANCELLED that this client did not ask for: the shard reset the stream, which is
  // how gRPC ends a request over the shard's receive limit when the reset overtakes the status.
  static absl::Status ExplainCancelled(absl::Status st) {
    return absl::CancelledError(absl::StrCat(
        st.message(), " (the shard closed the call before answering; a request larger than the "
        "shard's max_message_bytes is the usual cause)"));
  }
  // UNAVAILABLE is retried, NOT_FOUND re-registers, ALREADY_EXISTS is success: only other
  // failures make the rest of a round pointless.
  static bool HardFailure(const absl::Status& st) {
    return !st.ok() && !absl::IsUnavailable(st) && !absl::IsNotFound(st) &&
           !absl::IsAlreadyExists(st);
  }

  // One attempt of CallParts. Every part's context exists before any call starts, so that a
  // failure anywhere cancels them all (a context cancelled before its call cancels the call when
  // it starts).
  std::vector<absl::Status> PartsRound(const std::vector<int>& shards, absl::Duration timeout,
                                       const PartsFn& parts, const PartIoFn& io,
                                       const PartOkFn& on_ok, bool spread) {
    const auto deadline = absl::ToChronoTime(absl::Now() + timeout);
    std::vector<std::vector<std::unique_ptr<grpc::ClientContext>>> contexts(shards.size());
    for (size_t k = 0; k < shards.size(); ++k) {
      const int count = std::max(1, parts(shards[k]));
      for (int p = 0; p < count; ++p) {
        contexts[k].push_back(std::make_unique<grpc::ClientContext>());
        contexts[k].back()->set_deadline(deadline);
      }
    }
    std::vector<absl::Status> out(shards.size());
    absl::Mutex mu;
    bool failed = false;  // guarded by mu
    auto cancel_all = [&] {
      for (auto& of_shard : contexts) {
        for (auto& c : of_shard) c->TryCancel();
      }
    };
    // Drives the calls of shards[k] for k in `group` on one completion queue.
    auto run = [&](const std::vector<size_t>& group) {
      struct Part {
        std::unique_ptr<grpc::GenericClientAsyncResponseReader> reader;
        grpc::Status status;
        size_t k = 0;
        int part = 0;
      };
      grpc::CompletionQueue cq;
      std::vector<int> next(shards.size(), 0);
      std::vector<Part> calls(group.size() * kPullPartsInFlight);
      std::vector<Part*> free;
      for (Part& c : calls) free.push_back(&c);
      int in_flight = 0;
      auto start = [&](size_t k) {
        if (next[k] >= static_cast<int>(contexts[k].size()) || !out[k].ok()) return;
        Part* c = free.back();
        free.pop_back();
        c->k = k;
        c->part = next[k]++;
        const CallIo call_io = io(shards[k], c->part);
        call_io.response->Clear();
        c->reader = generic_stubs_[shards[k]]->PrepareUnaryCall(
            contexts[k][c->part].get(), call_io.method, *call_io.request, &cq);
        c->reader->StartCall();
        c->reader->Finish(call_io.response, &c->status, c);
        ++in_flight;
      };
      for (size_t k : group) {
        for (int i = 0; i < kPullPartsInFlight; ++i) start(k);
      }
      while (in_flight > 0) {
        void* tag = nullptr;
        bool ok = false;
        if (!cq.Next(&tag, &ok)) break;  // every call has a deadline: Next returns
        Part* c = static_cast<Part*>(tag);
        --in_flight;
        const size_t k = c->k;
        absl::Status st = FromGrpcStatus(c->status);
        if (st.ok() && out[k].ok()) st = on_ok(shards[k], c->part);
        c->reader.reset();
        free.push_back(c);
        bool cancel = false;
        {
          absl::MutexLock lock(&mu);
          if (absl::IsCancelled(st) && !failed) st = ExplainCancelled(st);
          if (HardFailure(st) && !failed) failed = cancel = true;
        }
        if (!st.ok() && out[k].ok()) {
          out[k] = st;
          for (auto& context : contexts[k]) context->TryCancel();  // the shard's other parts
        }
        if (cancel) cancel_all();
        start(k);
      }
      cq.Shutdown();
      void* tag = nullptr;
      bool ok = false;
      while (cq.Next(&tag, &ok)) {
      }
    };
    if (!spread || shards.size() == 1) {
      std::vector<size_t> all(shards.size());
      for (size_t k = 0; k < shards.size(); ++k) all[k] = k;
      run(all);
      return out;
    }
    OnThreadEach(shards.size(), [&run](size_t k) { run({k}); });
    return out;
  }

  // One concurrent attempt on `shards`; with kCancelRest the first hard failure cancels the calls
  // still running. The calls run on this client's completion queue, which only the calling
  // thread polls: no gRPC thread, and no thread hop, in a call's path.
  std::vector<absl::Status> Round(const std::vector<int>& shards, absl::Duration timeout,
                                  const IoFn& io, const OnOkFn& on_ok, OnFailure on_failure) {
    struct Pending {
      grpc::ClientContext context;
      std::unique_ptr<grpc::GenericClientAsyncResponseReader> reader;
      grpc::Status status;
      size_t k = 0;
    };
    const auto deadline = absl::ToChronoTime(absl::Now() + timeout);
    std::vector<std::unique_ptr<Pending>> calls;
    for (size_t k = 0; k < shards.size(); ++k) {
      const int shard = shards[k];
      const CallIo call_io = io(shard);
      call_io.response->Clear();
      auto p = std::make_unique<Pending>();
      p->k = k;
      p->context.set_deadline(deadline);
      p->reader = generic_stubs_[shard]->PrepareUnaryCall(&p->context, call_io.method,
                                                          *call_io.request, &cq_);
      p->reader->StartCall();
      p->reader->Finish(call_io.response, &p->status, p.get());
      calls.push_back(std::move(p));
    }
    std::vector<absl::Status> out(shards.size());
    bool failed = false;
    for (size_t remaining = calls.size(); remaining > 0; --remaining) {
      void* tag = nullptr;
      bool ok = false;
      // Every call has a deadline, so this returns; false only after Shutdown (never here).
      if (!cq_.Next(&tag, &ok)) break;
      const Pending& p = *static_cast<Pending*>(tag);
      absl::Status st = FromGrpcStatus(p.status);
      if (st.ok() && on_ok) st = on_ok(shards[p.k]);
      if (absl::IsCancelled(st) && !failed) st = ExplainCancelled(st);  // not cancelled by us
      out[p.k] = st;
      if (HardFailure(st) && !failed && on_failure == OnFailure::kCancelRest) {
        failed = true;
        for (const auto& other : calls) {
          if (other.get() != &p) other->context.TryCancel();
        }
      }
    }
    return out;
  }

  ClientOptions options_;
  ShardPlan plan_;
  const bool spread_;  // spread(): fixed by the options and the model
  std::shared_ptr<grpc::ChannelCredentials> credentials_;
  grpc::CompletionQueue drive_cq_;  // never given a call: DriveUntil polls through it
  std::vector<std::shared_ptr<grpc::Channel>> channels_;  // of shard i at index i
  std::vector<std::unique_ptr<grpc::GenericStub>> generic_stubs_;
  grpc::CompletionQueue cq_;  // the unary calls' (Round)
  // The push streams (none when options().push_streams is off), in groups that one thread each
  // drives: every shard's in one, or with spread() one group per shard.
  std::vector<std::unique_ptr<PushStreams>> push_groups_;
};

namespace {

template <typename Request>
void SetCredentials(const ClientOptions& o, Request* r) {
  r->set_job_id(o.job_id);
  r->set_token(o.token);
}

}  // namespace

PsClient::PsClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
PsClient::~PsClient() = default;

uint64_t PsClient::total_elements() const { return impl_->plan().total_elements(); }
const proto::ModelLayout& PsClient::layout() const { return impl_->plan().layout(); }

absl::StatusOr<std::unique_ptr<PsClient>> PsClient::Connect(const ClientOptions& options) {
  if (options.endpoints.empty()) {
    return absl::InvalidArgumentError("the client needs at least one shard endpoint");
  }
  if (options.max_message_bytes < 1024 || options.max_message_bytes > INT32_MAX) {
    return absl::InvalidArgumentError("max_message_bytes must be in [1024, 2^31)");
  }
  if (options.wire != proto::FP32 && options.wire != proto::FIXED16) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the wire encoding must be FP32 or FIXED16, got ", static_cast<int>(options.wire)));
  }
  if (options.wire_fl.has_value() &&
      (*options.wire_fl < 0 || *options.wire_fl > quant::kMaxFractionalBits)) {
    return absl::InvalidArgumentError(absl::StrCat("the wire FL must be in [0, ",
                                                   quant::kMaxFractionalBits, "], got ",
                                                   *options.wire_fl));
  }
  if (options.keep_freed_memory) KeepFreedMemoryForReuse();
  proto::ModelLayout layout;
  for (const TensorShape& t : options.tensors) {
    proto::TensorDecl* d = layout.add_tensors();
    d->set_name(t.name);
    d->set_element_count(t.element_count);
  }
  layout.set_chunk_size(options.chunk_size);
  layout.set_num_shards(static_cast<uint32_t>(options.endpoints.size()));
  ASSIGN_OR_RETURN(ShardPlan plan, ShardPlan::Create(layout));

  ASSIGN_OR_RETURN(std::shared_ptr<grpc::ChannelCredentials> credentials,
                   MakeChannelCredentials(options.tls));
  std::unique_ptr<PsClient> client(
      new PsClient(std::make_unique<Impl>(options, std::move(plan), std::move(credentials))));
  client->learner_id_ = options.learner_id;
  std::vector<int> rest = client->impl_->AllShards();
  // A learner that died in the middle of a push (a crash, or a run stopped by Ctrl-C) may have
  // pushed its last step to some shards only: it continues from the smallest clock, so that the
  // shards that missed that step get it (the others answer ALREADY_EXISTS, which is success).
  // The largest would let a hardsync shard complete that step without it.
  int64_t smallest = std::numeric_limits<int64_t>::max();
  if (options.learner_id == -1) {
    RETURN_IF_ERROR(client->RegisterAll({0}, &smallest));  // shard 0 assigns the id the others then use
    rest.erase(rest.begin());
  }
  if (!rest.empty()) RETURN_IF_ERROR(client->RegisterAll(rest, &smallest));
  client->start_clock_ = smallest;
  return client;
}

absl::Status PsClient::RegisterAll(const std::vector<int>& shards, int64_t* smallest_clock) {
  const int n = impl_->num_shards();
  shard_parts_.resize(n, false);
  std::vector<proto::RegisterRequest> requests(n);
  std::vector<proto::RegisterResponse> responses(n);
  for (int s : shards) {
    SetCredentials(impl_->options(), &requests[s]);
    requests[s].set_learner_id(learner_id_);
    *requests[s].mutable_layout() = impl_->plan().layout();
  }
  std::vector<grpc::ByteBuffer> request_bytes(n), response_bytes(n);
  for (int s : shards) request_bytes[s] = ToBytes(requests[s]);
  auto statuses = impl_->Call(
      shards, impl_->options().rpc_timeout,
      [&](int s) { return CallIo{kRegisterMethod, &request_bytes[s], &response_bytes[s]}; },
      [&](int s) { return FromBytes(&response_bytes[s], &responses[s]); });
  RETURN_IF_ERROR(impl_->Combine(statuses, "Register"));
  for (int s : shards) {
    if (learner_id_ == -1) {
      learner_id_ = responses[s].learner_id();
    } else if (responses[s].learner_id() != learner_id_) {
      return absl::InternalError(absl::StrCat("shard ", s, " registered learner ",
                                              responses[s].learner_id(), " instead of ",
                                              learner_id_));
    }
    start_clock_ = std::max(start_clock_, responses[s].clock());
    if (smallest_clock != nullptr) *smallest_clock = std::min(*smallest_clock, responses[s].clock());
    shard_parts_[s] = responses[s].parts();
  }
  return absl::OkStatus();
}

absl::Status PsClient::Init(std::span<const float> weights) {
  const ShardPlan& plan = impl_->plan();
  if (weights.size() != plan.total_elements()) {
    return absl::InvalidArgumentError(absl::StrCat("Init got ", weights.size(),
                                                   " weights; the model has ",
                                                   plan.total_elements()));
  }
  const int n = impl_->num_shards();
  std::vector<proto::InitRequest> requests(n);
  for (int s = 0; s < n; ++s) {
    SetCredentials(impl_->options(), &requests[s]);
    requests[s].set_learner_id(learner_id_);
    for (int i : plan.ChunksOfShard(s)) {
      const Chunk& c = plan.chunks()[i];
      proto::InitChunk* ic = requests[s].add_chunks();
      ic->mutable_id()->set_tensor(plan.TensorName(c.tensor));
      ic->mutable_id()->set_index(c.index);
      RETURN_IF_ERROR(EncodeFloats(weights.subspan(c.offset, c.length), proto::FP32,
                                   ic->mutable_weights()));
    }
  }
  std::vector<grpc::ByteBuffer> request_bytes(n), response_bytes(n);
  for (int s = 0; s < n; ++s) request_bytes[s] = ToBytes(requests[s]);
  auto statuses = impl_->Call(impl_->AllShards(), impl_->options().rpc_timeout, [&](int s) {
    return CallIo{kInitMethod, &request_bytes[s], &response_bytes[s]};
  });
  return impl_->Combine(statuses, "Init");
}

size_t PsClient::BytesPerElement() const { return impl_->BytesPerElement(); }

bool PsClient::spreads_shards() const { return impl_->spread(); }

std::vector<int> PsClient::Parts(uint64_t part_bytes) const {
  const ShardPlan& plan = impl_->plan();
  std::vector<int> parts(impl_->num_shards(), 1);
  for (int s = 0; s < impl_->num_shards(); ++s) {
    if (!shard_parts_[s]) continue;  // an older shard: whole messages
    const uint32_t shard = static_cast<uint32_t>(s);
    parts[s] = static_cast<int>(PartCount(plan.ShardElements(shard) * BytesPerElement(),
                                          plan.ChunksOfShard(shard).size(), part_bytes));
  }
  return parts;
}

absl::Status PsClient::Pull(int64_t clock, std::span<float> weights) {
  const ShardPlan& plan = impl_->plan();
  if (weights.size() != plan.total_elements()) {
    return absl::InvalidArgumentError(absl::StrCat("Pull got a buffer of ", weights.size(),
                                                   " floats; the model has ",
                                                   plan.total_elements()));
  }
  const int n = impl_->num_shards();
  // Each shard's answer comes in parts of about pull_part_bytes, so that the learner decodes one
  // part while the next is on the wire (and the shard copies it out meanwhile).
  const std::vector<int> parts = Parts(impl_->options().pull_part_bytes);
  std::vector<std::vector<grpc::ByteBuffer>> requests(n), responses(n);
  for (int s = 0; s < n; ++s) {
    for (int p = 0; p < parts[s]; ++p) {
      auto r = std::make_shared<proto::PullRequest>();
      SetCredentials(impl_->options(), r.get());
      r->set_learner_id(learner_id_);
      r->set_clock(clock);
      r->set_encoding(impl_->options().wire);
      if (parts[s] > 1) {
        r->set_part(static_cast<uint32_t>(p));
        r->set_parts(static_cast<uint32_t>(parts[s]));
      }
      requests[s].push_back(SerializeAliased(std::move(r)));
    }
    responses[s].resize(parts[s]);
  }
  std::vector<uint64_t> received(n, 0);
  PartIoFn start = [&](int s, int p) {
    if (p == 0) received[s] = 0;  // a retried shard starts over
    return CallIo{kPullMethod, &requests[s][p], &responses[s][p]};
  };
  // Decode each part on arrival, straight from the received bytes into `weights`; shards and
  // parts write disjoint ranges of `weights` and of the chunk versions.
  PartOkFn decode = [&](int s, int p) -> absl::Status {
    grpc::ByteBuffer& answer = responses[s][p];
    received[s] += answer.Length();
    grpc::ProtoBufferReader reader(&answer);
    if (!reader.status().ok()) return FromGrpcStatus(reader.status());
    const std::vector<int>& chunks = plan.ChunksOfShard(static_cast<uint32_t>(s));
    const auto [first, end] = PartOf(chunks.size(), p, parts[s]);
    absl::Status st = DecodePullResponsePart(
        &reader, plan, static_cast<uint32_t>(s),
        std::span<const int>(chunks).subspan(first, end - first), weights,
        impl_->chunk_versions_);
    answer.Clear();  // its memory serves the next part
    return st;
  };
  PartsFn count = [&](int s) { return parts[s]; };
  const bool spread = impl_->spread();
  auto statuses = impl_->CallParts(impl_->AllShards(), impl_->options().pull_timeout, count,
                                   start, decode, spread);
  std::vector<int> unknown;
  for (int s = 0; s < n; ++s) {
    if (absl::IsNotFound(statuses[s])) unknown.push_back(s);
  }
  if (!unknown.empty()) {  // dropped after a timeout, or the shard restarted: register again
    RETURN_IF_ERROR(RegisterAll(unknown));
    auto again = impl_->CallParts(unknown, impl_->options().pull_timeout, count, start, decode,
                                  spread);
    for (int s : unknown) statuses[s] = again[s];
  }
  RETURN_IF_ERROR(impl_->Combine(statuses, "Pull"));
  impl_->pulled_ = true;
  shard_version_.resize(n, 0);
  for (int s = 0; s < n; ++s) {
    const std::vector<int>& chunks = plan.ChunksOfShard(s);
    if (chunks.empty()) continue;
    uint64_t v = 0;
    for (int c : chunks) v = std::max(v, impl_->chunk_versions_[c]);
    if (v < shard_version_[s]) restarts_.push_back({s, shard_version_[s], v});
    shard_version_[s] = v;
  }
  ++wire_stats_.pulls;
  for (uint64_t b : received) wire_stats_.pull_bytes += b;
  return absl::OkStatus();
}

std::vector<PsClient::ShardRestart> PsClient::TakeShardRestarts() {
  return std::exchange(restarts_, {});
}

// One push's payloads lent to gRPC, a loan per message (PsClient::Push).
class PsClient::PushLoans {
 public:
  // The owner of the slices of one message to `shard` (on its push stream: `streamed`); the loan
  // ends when gRPC has let go of every slice. Thread-safe (spread pushes lend on several threads);
  // the other methods are called once those threads have joined.
  std::shared_ptr<const void> Lend(int shard, bool streamed) {
    auto loan = std::make_shared<Loan>();
    absl::MutexLock lock(&mu_);
    loan->shard = shard;
    loan->streamed = streamed;
    loans_.push_back(loan);
    return std::shared_ptr<const void>(loan.get(), [loan](const void*) { loan->released.store(true); });
  }
  // The shard answered the push on its stream: every part sent on it was read.
  void Answered(int shard) {
    for (const auto& loan : loans_) loan->answered |= loan->streamed && loan->shard == shard;
  }
  bool AllReleasedOrAnswered() const {
    for (const auto& loan : loans_) {
      if (!loan->answered && !loan->released.load()) return false;
    }
    return true;
  }

 private:
  struct Loan {
    int shard = 0;
    bool streamed = false;
    bool answered = false;
    std::atomic<bool> released{false};  // set on whichever thread gRPC drops the last slice
  };
  absl::Mutex mu_;
  std::vector<std::shared_ptr<Loan>> loans_;
};

absl::Status PsClient::Push(int64_t step, std::span<const float> grads, uint32_t samples,
                            float loss) {
  // FP32 payloads are sent from `grads` itself, not copied (SerializeWithAliasedChunks). The
  // caller may overwrite `grads` once Push returns, so by then gRPC must have read the last of
  // those bytes: a message the shard answered was (it answers after reading all of it), even
  // though gRPC keeps a push stream's last message referenced until the stream's next one; any
  // other (a unary call, a push stream that failed or ran out of time) must first be let go of.
  PushLoans loans;
  absl::Status st = PushLending(step, grads, samples, loss, &loans);
  auto released = [&loans] { return loans.AllReleasedOrAnswered(); };
  if (!impl_->DriveUntil(released, absl::Now() + kReleaseWait)) {
    // Only a connection that stopped taking bytes holds them this long: once it is closed,
    // nothing more is sent from `grads`.
    LOG(WARNING) << "a push's gradient was still queued for a shard " << absl::FormatDuration(kReleaseWait)
                 << " after the push ended; closing this learner's connections";
    impl_->ResetConnections();
    if (!impl_->DriveUntil(released, absl::Now() + kReleaseWait)) {
      LOG(WARNING) << "gRPC still held a push's gradient after its connections were closed";
    }
    ++wire_stats_.connection_resets;
  }
  return st;
}

absl::Status PsClient::PushLending(int64_t step, std::span<const float> grads, uint32_t samples, float loss,
                                   PushLoans* loans) {
  const ShardPlan& plan = impl_->plan();
  if (grads.size() != plan.total_elements()) {
    return absl::InvalidArgumentError(absl::StrCat("Push got ", grads.size(),
                                                   " gradient values; the model has ",
                                                   plan.total_elements()));
  }
  if (!impl_->pulled_) {
    return absl::FailedPreconditionError("Push needs a Pull first (to know the base versions)");
  }
  const int n = impl_->num_shards();
  const ClientOptions& options = impl_->options();
  Fixed16Encoding fixed16;  // read for FIXED16 only
  fixed16.fl = options.wire_fl;
  fixed16.rounding = quant::Rounding::kStochastic;
  const quant::RandomStream stream =
      quant::RandomStream::For(static_cast<uint64_t>(learner_id_), static_cast<uint64_t>(step));
  // Shards reached by stream, and whether theirs was just opened: only a stream's first message
  // carries the credentials (the shard checks them once per stream).
  std::vector<int> streamed;
  std::vector<bool> fresh(n, true);
  for (int s = 0; s < n; ++s) {
    bool opened = true;
    if (impl_->OpenPushStream(s, &opened)) {
      streamed.push_back(s);
      fresh[s] = opened;
    }
  }
  // FP32 payloads stay in `grads` (their messages' gradients have no data); FIXED16 ones are
  // encoded into the message.
  const bool lend = options.wire == proto::FP32 || options.wire == proto::ENCODING_UNSPECIFIED;
  // Part `part` of `parts` of shard s's push (the whole push when parts is 1), without
  // credentials, and the plan's indices of its chunks in message order.
  struct Built {
    std::shared_ptr<proto::PushRequest> message;
    std::span<const int> chunks;
  };
  auto build = [&](int s, int part, int parts) -> absl::StatusOr<Built> {
    const std::vector<int>& chunks = plan.ChunksOfShard(s);
    // One base version per shard: the oldest among the chunks it pulled. A pull in parts may see
    // updates between its parts; the gradient is then as stale as its oldest part.
    uint64_t base = UINT64_MAX;
    for (int i : chunks) base = std::min(base, impl_->chunk_versions_[i]);
    auto request = std::make_shared<proto::PushRequest>();
    proto::PushRequest& r = *request;
    r.set_learner_id(learner_id_);
    r.set_step(step);
    r.set_samples(samples);
    r.set_loss(loss);
    if (parts > 1) {
      r.set_part(static_cast<uint32_t>(part));
      r.set_parts(static_cast<uint32_t>(parts));
    }
    const auto [first, end] = PartOf(chunks.size(), part, parts);
    r.mutable_chunks()->Reserve(static_cast<int>(end - first));
    for (size_t j = first; j < end; ++j) {
      const Chunk& c = plan.chunks()[chunks[j]];
      proto::PushChunk* pc = r.add_chunks();
      pc->mutable_id()->set_tensor(plan.TensorName(c.tensor));
      pc->mutable_id()->set_index(c.index);
      pc->set_base_version(base);
      if (lend) {
        pc->mutable_gradient()->set_encoding(proto::FP32);
        pc->mutable_gradient()->set_element_count(static_cast<uint32_t>(c.length));
        continue;
      }
      Fixed16Encoding chunk_fixed16 = fixed16;
      chunk_fixed16.stream = stream.Advanced(c.offset);
      absl::Status encoded = EncodeFloats(grads.subspan(c.offset, c.length), options.wire,
                                          pc->mutable_gradient(), chunk_fixed16);
      if (!encoded.ok()) {
        return absl::Status(encoded.code(),
                            absl::StrCat("Push: gradient chunk ", plan.TensorName(c.tensor), "/",
                                         c.index, ": ", encoded.message()));
      }
    }
    return Built{std::move(request), std::span<const int>(chunks).subspan(first, end - first)};
  };
  // A built message's bytes: the payloads are slices of `grads` (lent to shard s's call: on its
  // push stream, `streamed`) or of the message.
  // (A lent message's chunks are moved out of it: it is left holding the other fields.)
  auto serialize = [&](Built built, int s, bool streamed) -> grpc::ByteBuffer {
    if (!lend) return SerializeAliased(std::move(built.message));
    google::protobuf::RepeatedPtrField<proto::PushChunk> heads;
    heads.Swap(built.message->mutable_chunks());
    std::vector<std::unique_ptr<proto::EncodedTensor>> tensors(built.chunks.size());
    std::vector<AliasedChunk> chunks(built.chunks.size());
    for (size_t i = 0; i < chunks.size(); ++i) {
      tensors[i].reset(heads[static_cast<int>(i)].release_gradient());
      const Chunk& c = plan.chunks()[built.chunks[i]];
      chunks[i] = AliasedChunk{&heads[static_cast<int>(i)], proto::PushChunk::kGradientFieldNumber, tensors[i].get(),
                               grads.data() + c.offset, c.length * sizeof(float)};
    }
    return SerializeWithAliasedChunks(*built.message, proto::PushRequest::kChunksFieldNumber, chunks,
                                      loans->Lend(s, streamed));
  };
  // The whole push to shard s with credentials, serialised, for the unary call.
  std::vector<bool> built(n, false);
  std::vector<grpc::ByteBuffer> requests(n), responses(n);
  auto whole = [&](int s) -> absl::Status {
    if (!built[s]) {
      ASSIGN_OR_RETURN(Built message, build(s, 0, 1));
      SetCredentials(impl_->options(), message.message.get());
      requests[s] = serialize(std::move(message), s, /*streamed=*/false);
      built[s] = true;
    }
    return absl::OkStatus();
  };
  std::vector<uint64_t> sent_bytes(n, 0);  // by the final attempt
  std::vector<absl::Status> statuses(n);
  std::vector<int> unary;  // shards to push to with the unary call
  uint64_t answered_on_stream = 0;
  std::vector<bool> is_streamed(n, false);
  if (!streamed.empty()) {
    // A push of more than push_part_bytes to a shard that takes parts goes in parts of about
    // that size: the shard checks one while the next is encoded and on the wire.
    const std::vector<int> shard_parts = Parts(options.push_part_bytes);
    std::vector<int> parts;  // per streamed shard
    for (int s : streamed) parts.push_back(shard_parts[s]);
    // With spread pushes, shard k's parts are made on its own thread: only its entries change.
    const PushStreams::PartSource source =
        [&](size_t k, int part) -> absl::StatusOr<grpc::ByteBuffer> {
      const int s = streamed[k];
      if (part == 0) sent_bytes[s] = 0;
      ASSIGN_OR_RETURN(Built message, build(s, part, parts[k]));
      if (part == 0 && fresh[s]) SetCredentials(impl_->options(), message.message.get());
      grpc::ByteBuffer bytes = serialize(std::move(message), s, /*streamed=*/true);
      sent_bytes[s] += bytes.Length();
      return bytes;
    };
    const std::vector<PushStreams::Result> results = impl_->PushOnStreams(
        streamed, parts, source, step, absl::Now() + impl_->options().rpc_timeout);
    for (size_t k = 0; k < streamed.size(); ++k) {
      const int s = streamed[k];
      is_streamed[s] = true;
      if (results[k].outcome == PushStreams::Outcome::kNoAnswer) {
        unary.push_back(s);  // the unary call is the authority on what went wrong
      } else {
        statuses[s] = results[k].status;
        if (results[k].outcome == PushStreams::Outcome::kAnswered) {
          ++answered_on_stream;
          loans->Answered(s);  // on its stream: every part was read
        }
      }
    }
  }
  for (int s = 0; s < n; ++s) {
    if (!is_streamed[s]) unary.push_back(s);
  }
  std::sort(unary.begin(), unary.end());
  for (int s : unary) RETURN_IF_ERROR(whole(s));
  IoFn start = [&](int s) {
    sent_bytes[s] = requests[s].Length();
    return CallIo{kPushMethod, &requests[s], &responses[s]};
  };
  if (!unary.empty()) {
    auto called = impl_->Call(unary, impl_->options().rpc_timeout, start, nullptr,
                              Impl::OnFailure::kLetFinish);
    for (int s : unary) statuses[s] = called[s];
  }
  std::vector<int> unknown;
  for (int s = 0; s < n; ++s) {
    if (absl::IsAlreadyExists(statuses[s])) statuses[s] = absl::OkStatus();  // a retried push
    if (absl::IsNotFound(statuses[s])) unknown.push_back(s);
  }
  if (!unknown.empty()) {
    RETURN_IF_ERROR(RegisterAll(unknown));
    for (int s : unknown) RETURN_IF_ERROR(whole(s));
    auto again = impl_->Call(unknown, impl_->options().rpc_timeout, start, nullptr,
                             Impl::OnFailure::kLetFinish);
    for (int s : unknown) statuses[s] = absl::IsAlreadyExists(again[s]) ? absl::OkStatus() : again[s];
  }
  std::vector<int> refused;
  for (int s = 0; s < n; ++s) {
    if (absl::IsFailedPrecondition(statuses[s])) refused.push_back(s);
  }
  if (!refused.empty()) {
    // The caller goes on from start_clock(): ask the shards that dropped this step where they
    // are (registering again changes nothing for an active learner but tells its clock).
    absl::Status st = RegisterAll(refused);
    if (!st.ok()) LOG(WARNING) << "cannot learn the clock of the shards that refused a push: " << st;
  }
  RETURN_IF_ERROR(impl_->Combine(statuses, "Push"));
  ++wire_stats_.pushes;
  wire_stats_.streamed_shard_pushes += answered_on_stream;
  for (uint64_t b : sent_bytes) wire_stats_.push_bytes += b;
  return absl::OkStatus();
}

absl::StatusOr<PsStats> PsClient::Stats() {
  const int n = impl_->num_shards();
  std::vector<proto::StatsRequest> requests(n);
  std::vector<proto::StatsResponse> responses(n);
  std::vector<grpc::ByteBuffer> request_bytes(n), response_bytes(n);
  for (int s = 0; s < n; ++s) {
    SetCredentials(impl_->options(), &requests[s]);
    request_bytes[s] = ToBytes(requests[s]);
  }
  auto statuses = impl_->Call(
      impl_->AllShards(), impl_->options().rpc_timeout,
      [&](int s) { return CallIo{kStatsMethod, &request_bytes[s], &response_bytes[s]}; },
      [&](int s) { return FromBytes(&response_bytes[s], &responses[s]); });
  RETURN_IF_ERROR(impl_->Combine(statuses, "Stats"));
  PsStats out;
  ShardStats& t = out.total;
  double loss_sum = 0;
  for (int s = 0; s < n; ++s) {
    const proto::StatsResponse& r = responses[s];
    ShardStats x;
    x.shard = r.shard();
    x.version = r.version();
    x.gradients_applied = r.gradients_applied();
    x.gradients_rejected = r.gradients_rejected();
    x.gradients_rejected_nonfinite = r.gradients_rejected_nonfinite();
    x.pushes = r.pushes();
    x.pulls = r.pulls();
    x.samples_applied = r.samples_applied();
    x.active_learners = r.active_learners();
    x.train_loss_recent = r.train_loss_recent();
    x.staleness_histogram.assign(r.staleness_histogram().begin(), r.staleness_histogram().end());
    x.staleness_max = r.staleness_max();
    x.staleness_sum = r.staleness_sum();
    x.gradient_age_count = r.gradient_age_count();
    x.gradient_age_sum = r.gradient_age_sum();
    x.gradient_age_max = r.gradient_age_max();
    t.version = std::max(t.version, x.version);
    t.gradients_applied = std::max(t.gradients_applied, x.gradients_applied);
    t.gradients_rejected += x.gradients_rejected;
    t.gradients_rejected_nonfinite += x.gradients_rejected_nonfinite;
    t.pushes = std::max(t.pushes, x.pushes);
    t.pulls = std::max(t.pulls, x.pulls);
    t.samples_applied = std::max(t.samples_applied, x.samples_applied);
    t.active_learners = std::max(t.active_learners, x.active_learners);
    loss_sum += x.train_loss_recent;
    if (t.staleness_histogram.size() < x.staleness_histogram.size()) {
      t.staleness_histogram.resize(x.staleness_histogram.size(), 0);
    }
    for (size_t b = 0; b < x.staleness_histogram.size(); ++b) {
      t.staleness_histogram[b] += x.staleness_histogram[b];
    }
    t.staleness_max = std::max(t.staleness_max, x.staleness_max);
    t.staleness_sum += x.staleness_sum;
    t.gradient_age_count += x.gradient_age_count;
    t.gradient_age_sum += x.gradient_age_sum;
    t.gradient_age_max = std::max(t.gradient_age_max, x.gradient_age_max);
    out.shards.push_back(std::move(x));
  }
  t.train_loss_recent = n > 0 ? loss_sum / n : 0;
  return out;
}

absl::Status PsClient::Leave() {
  const int n = impl_->num_shards();
  std::vector<grpc::ByteBuffer> request_bytes(n), response_bytes(n);
  for (int s = 0; s < n; ++s) {
    proto::LeaveRequest request;
    SetCredentials(impl_->options(), &request);
    request.set_learner_id(learner_id_);
    request_bytes[s] = ToBytes(request);
  }
  auto statuses = impl_->Call(impl_->AllShards(), impl_->options().rpc_timeout, [&](int s) {
    return CallIo{kLeaveMethod, &request_bytes[s], &response_bytes[s]};
  });
  for (auto& st : statuses) {
    if (absl::IsNotFound(st)) st = absl::OkStatus();  // already gone
  }
  return impl_->Combine(statuses, "Leave");
}

}  // namespace orrery::server
