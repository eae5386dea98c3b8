#include "server/client.h"

#include <algorithm>
#include <functional>
#include <thread>

#include <grpcpp/completion_queue.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/impl/codegen/proto_utils.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>
#include <grpcpp/support/proto_buffer_reader.h>

#include "absl/strings/str_cat.h"
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
const char kStatsMethod[] = "/orrery.proto.ParameterServer/Stats";
const char kLeaveMethod[] = "/orrery.proto.ParameterServer/Leave";

// What one call to a shard sends and where its answer goes; both must outlive the call.
struct CallIo {
  const char* method = nullptr;
  const grpc::ByteBuffer* request = nullptr;
  grpc::ByteBuffer* response = nullptr;
};
using IoFn = std::function<CallIo(int shard)>;
// Pulls of at least this many bytes per shard run each shard's call on its own thread (see Pull).
constexpr size_t kSpreadPullBytes = 1 << 20;
// Runs on the calling thread when shard `shard` answered OK; may turn the answer into an error.
using OnOkFn = std::function<absl::Status(int shard)>;

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

class PsClient::Impl {
 public:
  Impl(ClientOptions options, ShardPlan plan, std::shared_ptr<grpc::ChannelCredentials> credentials)
      : options_(std::move(options)), plan_(std::move(plan)) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(static_cast<int>(options_.max_message_bytes));
    args.SetMaxSendMessageSize(static_cast<int>(options_.max_message_bytes));
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // each client its own connections
    for (const std::string& endpoint : options_.endpoints) {
      auto channel = grpc::CreateCustomChannel(endpoint, credentials, args);
      generic_stubs_.push_back(std::make_unique<grpc::GenericStub>(channel));
    }
    chunk_versions_.assign(plan_.chunks().size(), 0);
    if (options_.push_streams) {
      std::vector<grpc::GenericStub*> stubs;
      for (const auto& g : generic_stubs_) stubs.push_back(g.get());
      // A stream lives (under its call deadline) far longer than a push may take, and is
      // replaced before a push could outlive it.
      push_streams_ = std::make_unique<PushStreams>(
          std::move(stubs), std::max(absl::Minutes(10), 4 * options_.rpc_timeout),
          options_.rpc_timeout);
    }
  }
  // Streams first: they hold calls on the channels below. Every Round has drained its calls.
  ~Impl() {
    push_streams_.reset();
    cq_.Shutdown();
    void* tag = nullptr;
    bool ok = false;
    while (cq_.Next(&tag, &ok)) {
    }
  }

  const ClientOptions& options() const { return options_; }
  const ShardPlan& plan() const { return plan_; }
  int num_shards() const { return static_cast<int>(generic_stubs_.size()); }
  // Null when options().push_streams is off.
  PushStreams* push_streams() const { return push_streams_.get(); }
  std::vector<int> AllShards() const {
    std::vector<int> all(generic_stubs_.size());
    for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<int>(i);
    return all;
  }

  // Call's `spread`: each call on a thread of its own, for answers so large that receiving and
  // decoding them one after another on the calling thread would leave a core idle.
  // How a round reacts to one shard's hard failure.
  enum class OnFailure {
    kCancelRest,  // the others' answers are useless now (pulls, registration)
    kLetFinish,   // each shard judges its own part (pushes): every shard's count stays exact
  };

  // Calls `shards` concurrently, retrying those that answer UNAVAILABLE with backoff until the
  // retry budget is spent. Returns one status per shard index (OK for shards not called).
  std::vector<absl::Status> Call(std::vector<int> shards, absl::Duration timeout,
                                 const IoFn& io, const OnOkFn& on_ok = nullptr,
                                 OnFailure on_failure = OnFailure::kCancelRest,
                                 bool spread = false) {
    std::vector<absl::Status> result(generic_stubs_.size());
    const absl::Time give_up = absl::Now() + options_.retry_budget;
    absl::Duration backoff = absl::Milliseconds(50);
    while (true) {
      std::vector<absl::Status> round = spread && shards.size() > 1
                                            ? SpreadRound(shards, timeout, io, on_ok, on_failure)
                                            : Round(shards, timeout, io, on_ok, on_failure);
      std::vector<int> again;
      for (size_t k = 0; k < shards.size(); ++k) {
        result[shards[k]] = round[k];
        if (absl::IsUnavailable(round[k])) again.push_back(shards[k]);
      }
      if (again.empty() || absl::Now() + backoff > give_up) break;
      absl::SleepFor(backoff);
      backoff = std::min(2 * backoff, absl::Seconds(2));
      shards = std::move(again);
    }
    return result;
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
  // Round with each call on its own thread and completion queue (the caller's thread takes the
  // first); `io` and `on_ok` run on those threads and must touch only their shard's data.
  std::vector<absl::Status> SpreadRound(const std::vector<int>& shards, absl::Duration timeout,
                                        const IoFn& io, const OnOkFn& on_ok,
                                        OnFailure on_failure) {
    const auto deadline = absl::ToChronoTime(absl::Now() + timeout);
    std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
    for (size_t k = 0; k < shards.size(); ++k) {
      contexts.push_back(std::make_unique<grpc::ClientContext>());
      contexts.back()->set_deadline(deadline);
    }
    std::vector<absl::Status> out(shards.size());
    absl::Mutex mu;
    bool failed = false;
    auto run = [&](size_t k) {
      const int shard = shards[k];
      const CallIo call_io = io(shard);
      call_io.response->Clear();
      grpc::CompletionQueue cq;
      grpc::Status status;
      auto reader = generic_stubs_[shard]->PrepareUnaryCall(contexts[k].get(), call_io.method,
                                                            *call_io.request, &cq);
      reader->StartCall();
      reader->Finish(call_io.response, &status, &status);
      void* tag = nullptr;
      bool ok = false;
      cq.Next(&tag, &ok);  // the call's deadline bounds the wait
      absl::Status st = FromGrpcStatus(status);
      if (st.ok() && on_ok) st = on_ok(shard);
      bool cancel_others = false;
      {
        absl::MutexLock lock(&mu);
        if (absl::IsCancelled(st) && !failed) {
          st = absl::CancelledError(absl::StrCat(
              st.message(), " (the shard closed the call before answering; a request larger "
              "than the shard's max_message_bytes is the usual cause)"));
        }
        const bool hard = !st.ok() && !absl::IsUnavailable(st) && !absl::IsNotFound(st) &&
                          !absl::IsAlreadyExists(st);
        if (hard && !failed && on_failure == OnFailure::kCancelRest) {
          failed = true;
          cancel_others = true;
        }
      }
      if (cancel_others) {  // a context not yet used cancels its call when it starts
        for (size_t j = 0; j < contexts.size(); ++j) {
          if (j != k) contexts[j]->TryCancel();
        }
      }
      out[k] = st;
      cq.Shutdown();
      while (cq.Next(&tag, &ok)) {
      }
    };
    std::vector<std::thread> threads;
    for (size_t k = 1; k < shards.size(); ++k) threads.emplace_back(run, k);
    run(0);
    for (std::thread& t : threads) t.join();
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
      if (absl::IsCancelled(st) && !failed) {
        // Not cancelled by us: the shard reset the stream, which is how gRPC ends a request over
        // the shard's receive limit when the reset overtakes the status.
        st = absl::CancelledError(absl::StrCat(
            st.message(), " (the shard closed the call before answering; a request larger than "
            "the shard's max_message_bytes is the usual cause)"));
      }
      out[p.k] = st;
      // UNAVAILABLE is retried, NOT_FOUND re-registers, ALREADY_EXISTS is success: only other
      // failures make the rest of the round pointless.
      const bool hard = !st.ok() && !absl::IsUnavailable(st) && !absl::IsNotFound(st) &&
                        !absl::IsAlreadyExists(st);
      if (hard && !failed && on_failure == OnFailure::kCancelRest) {
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
  std::vector<std::unique_ptr<grpc::GenericStub>> generic_stubs_;
  grpc::CompletionQueue cq_;  // the unary calls' (Round)
  std::unique_ptr<PushStreams> push_streams_;
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
  if (options.learner_id == -1) {
    RETURN_IF_ERROR(client->RegisterAll({0}));  // shard 0 assigns the id the others then use
    rest.erase(rest.begin());
  }
  if (!rest.empty()) RETURN_IF_ERROR(client->RegisterAll(rest));
  return client;
}

absl::Status PsClient::RegisterAll(const std::vector<int>& shards) {
  const int n = impl_->num_shards();
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

absl::Status PsClient::Pull(int64_t clock, std::span<float> weights) {
  const ShardPlan& plan = impl_->plan();
  if (weights.size() != plan.total_elements()) {
    return absl::InvalidArgumentError(absl::StrCat("Pull got a buffer of ", weights.size(),
                                                   " floats; the model has ",
                                                   plan.total_elements()));
  }
  const int n = impl_->num_shards();
  std::vector<grpc::ByteBuffer> requests(n), responses(n);
  for (int s = 0; s < n; ++s) {
    auto r = std::make_shared<proto::PullRequest>();
    SetCredentials(impl_->options(), r.get());
    r->set_learner_id(learner_id_);
    r->set_clock(clock);
    r->set_encoding(impl_->options().wire);
    requests[s] = SerializeAliased(std::move(r));
  }
  IoFn start = [&](int s) { return CallIo{kPullMethod, &requests[s], &responses[s]}; };
  // Decode each shard's answer on arrival, straight from the received bytes into `weights`;
  // shards write disjoint ranges of `weights` and of the chunk versions.
  OnOkFn decode = [&](int s) -> absl::Status {
    grpc::ProtoBufferReader reader(&responses[s]);
    if (!reader.status().ok()) return FromGrpcStatus(reader.status());
    return DecodePullResponse(&reader, plan, static_cast<uint32_t>(s), weights,
                              impl_->chunk_versions_);
  };
  // With several shards and a large model, each shard's answer is received and decoded on a
  // thread of its own; shards write disjoint ranges of `weights` and of the chunk versions.
  const size_t bytes_per_element = impl_->options().wire == proto::FIXED16 ? 2 : 4;
  const bool spread = plan.total_elements() * bytes_per_element / n >= kSpreadPullBytes;
  auto statuses = impl_->Call(impl_->AllShards(), impl_->options().pull_timeout, start, decode,
                              Impl::OnFailure::kCancelRest, spread);
  std::vector<int> unknown;
  for (int s = 0; s < n; ++s) {
    if (absl::IsNotFound(statuses[s])) unknown.push_back(s);
  }
  if (!unknown.empty()) {  // dropped after a timeout, or the shard restarted: register again
    RETURN_IF_ERROR(RegisterAll(unknown));
    auto again = impl_->Call(unknown, impl_->options().pull_timeout, start, decode,
                             Impl::OnFailure::kCancelRest, spread);
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
  for (const grpc::ByteBuffer& b : responses) wire_stats_.pull_bytes += b.Length();
  return absl::OkStatus();
}

std::vector<PsClient::ShardRestart> PsClient::TakeShardRestarts() {
  return std::exchange(restarts_, {});
}

absl::Status PsClient::Push(int64_t step, std::span<const float> grads, uint32_t samples,
                            float loss) {
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
  PushStreams* streams = impl_->push_streams();
  std::vector<int> streamed;
  std::vector<bool> fresh(n, true);
  for (int s = 0; s < n; ++s) {
    if (streams != nullptr && streams->Supported(s)) {
      streamed.push_back(s);
      fresh[s] = streams->Open(s);
    }
  }
  std::vector<std::shared_ptr<proto::PushRequest>> messages(n);
  std::vector<grpc::ByteBuffer> requests(n), responses(n);
  for (int s = 0; s < n; ++s) {
    auto request = std::make_shared<proto::PushRequest>();
    proto::PushRequest& r = *request;
    if (fresh[s]) SetCredentials(impl_->options(), &r);
    r.set_learner_id(learner_id_);
    r.set_step(step);
    r.set_samples(samples);
    r.set_loss(loss);
    r.mutable_chunks()->Reserve(static_cast<int>(plan.ChunksOfShard(s).size()));
    for (int i : plan.ChunksOfShard(s)) {
      const Chunk& c = plan.chunks()[i];
      proto::PushChunk* pc = r.add_chunks();
      pc->mutable_id()->set_tensor(plan.TensorName(c.tensor));
      pc->mutable_id()->set_index(c.index);
      pc->set_base_version(impl_->chunk_versions_[i]);
      fixed16.stream = stream.Advanced(c.offset);
      absl::Status encoded = EncodeFloats(grads.subspan(c.offset, c.length), options.wire,
                                          pc->mutable_gradient(), fixed16);
      if (!encoded.ok()) {
        return absl::Status(encoded.code(),
                            absl::StrCat("Push: gradient chunk ", plan.TensorName(c.tensor), "/",
                                         c.index, ": ", encoded.message()));
      }
    }
    // The payloads were copied once, into `request`; the serialised buffer points into it.
    requests[s] = SerializeAliased(request);
    messages[s] = std::move(request);
  }
  std::vector<absl::Status> statuses(n);
  std::vector<int> unary;  // shards to push to with the unary call
  uint64_t answered_on_stream = 0;
  std::vector<bool> is_streamed(n, false);
  if (!streamed.empty()) {
    std::vector<grpc::ByteBuffer> stream_requests;
    for (int s : streamed) stream_requests.push_back(requests[s]);
    const std::vector<PushStreams::Result> results = streams->Push(
        streamed, stream_requests, step, absl::Now() + impl_->options().rpc_timeout);
    for (size_t k = 0; k < streamed.size(); ++k) {
      const int s = streamed[k];
      is_streamed[s] = true;
      if (results[k].outcome == PushStreams::Outcome::kNoAnswer) {
        unary.push_back(s);  // the unary call is the authority on what went wrong
      } else {
        statuses[s] = results[k].status;
        if (results[k].outcome == PushStreams::Outcome::kAnswered) ++answered_on_stream;
      }
    }
  }
  for (int s = 0; s < n; ++s) {
    if (!is_streamed[s]) unary.push_back(s);
  }
  std::sort(unary.begin(), unary.end());
  for (int s : unary) {
    if (!fresh[s]) {  // serialised for a stream without credentials: the unary call needs them
      SetCredentials(impl_->options(), messages[s].get());
      requests[s] = SerializeAliased(messages[s]);
      fresh[s] = true;
    }
  }
  IoFn start = [&](int s) { return CallIo{kPushMethod, &requests[s], &responses[s]}; };
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
    for (int s : unknown) {
      if (!fresh[s]) {
        SetCredentials(impl_->options(), messages[s].get());
        requests[s] = SerializeAliased(messages[s]);
        fresh[s] = true;
      }
    }
    auto again = impl_->Call(unknown, impl_->options().rpc_timeout, start, nullptr,
                             Impl::OnFailure::kLetFinish);
    for (int s : unknown) statuses[s] = absl::IsAlreadyExists(again[s]) ? absl::OkStatus() : again[s];
  }
  RETURN_IF_ERROR(impl_->Combine(statuses, "Push"));
  ++wire_stats_.pushes;
  wire_stats_.streamed_shard_pushes += answered_on_stream;
  for (const grpc::ByteBuffer& b : requests) wire_stats_.push_bytes += b.Length();
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
