#include "server/ps_service.h"

#include <atomic>

#include <grpcpp/impl/codegen/proto_utils.h>

#include "absl/synchronization/mutex.h"
#include "server/aliased_serializer.h"
#include "server/status_util.h"

namespace orrery::server {
namespace {

// Finishes a unary call from a domain result computed on the calling thread.
template <typename Response>
grpc::ServerUnaryReactor* FinishNow(grpc::CallbackServerContext* context,
                                    absl::StatusOr<Response> result, Response* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (result.ok()) {
    *response = std::move(*result);
    reactor->Finish(grpc::Status::OK);
  } else {
    reactor->Finish(ToGrpcStatus(result.status()));
  }
  return reactor;
}

// One Pull call. Lives until both the starter has finished with it and gRPC has called OnDone.
class PullReactor final : public grpc::ServerUnaryReactor {
 public:
  PullReactor(ParameterShard* shard, grpc::ByteBuffer* response)
      : shard_(shard), response_(response) {}

  void Start(const proto::PullRequest& request) {
    const ParameterShard::Ticket ticket =
        shard_->Pull(request, [this](absl::StatusOr<PullAnswer> result) {
          if (result.ok()) {
            *response_ = SerializePullAnswer(std::make_shared<PullAnswer>(std::move(*result)));
            Finish(response_->Valid() ? grpc::Status::OK
                                      : grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                                     "the pull answer is 2 GiB or larger"));
          } else {
            Finish(ToGrpcStatus(result.status()));
          }
        });
    bool cancelled;
    {
      absl::MutexLock lock(&mu_);
      ticket_ = ticket;
      started_ = true;
      cancelled = cancelled_;
    }
    if (cancelled && ticket != 0) shard_->CancelPull(ticket);
    Unref();
  }

  void OnCancel() override {
    ParameterShard::Ticket ticket = 0;
    {
      absl::MutexLock lock(&mu_);
      cancelled_ = true;
      if (started_) ticket = ticket_;
    }
    if (ticket != 0) shard_->CancelPull(ticket);  // a no-op when it was already answered
  }

  void OnDone() override { Unref(); }

 private:
  void Unref() {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

  ParameterShard* const shard_;
  grpc::ByteBuffer* const response_;
  std::atomic<int> refs_{2};
  absl::Mutex mu_;
  ParameterShard::Ticket ticket_ ABSL_GUARDED_BY(mu_) = 0;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace

grpc::ServerUnaryReactor* PsService::Register(grpc::CallbackServerContext* context,
                                              const proto::RegisterRequest* request,
                                              proto::RegisterResponse* response) {
  return FinishNow(context, shard_->Register(*request), response);
}

grpc::ServerUnaryReactor* PsService::Init(grpc::CallbackServerContext* context,
                                          const proto::InitRequest* request,
                                          proto::InitResponse* response) {
  return FinishNow(context, shard_->Init(*request), response);
}

grpc::ServerUnaryReactor* PsService::Push(grpc::CallbackServerContext* context,
                                          const proto::PushRequest* request,
                                          proto::PushResponse* response) {
  return FinishNow(context, shard_->Push(*request), response);
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* PsService::PushStream(
    grpc::CallbackServerContext* /*context*/) {
  return new PushStreamReactor(shard_, &push_streams_);
}

grpc::ServerUnaryReactor* PsService::Pull(grpc::CallbackServerContext* context,
                                          const grpc::ByteBuffer* request,
                                          grpc::ByteBuffer* response) {
  proto::PullRequest parsed;
  grpc::ByteBuffer copy = *request;  // shares the slices; parsing consumes the buffer
  if (!grpc::SerializationTraits<proto::PullRequest>::Deserialize(&copy, &parsed).ok()) {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                 "the request is not a PullRequest"));
    return reactor;
  }
  auto* reactor = new PullReactor(shard_, response);
  reactor->Start(parsed);
  return reactor;
}

grpc::ServerUnaryReactor* PsService::Stats(grpc::CallbackServerContext* context,
                                           const proto::StatsRequest* request,
                                           proto::StatsResponse* response) {
  return FinishNow(context, shard_->Stats(*request), response);
}

grpc::ServerUnaryReactor* PsService::Leave(grpc::CallbackServerContext* context,
                                           const proto::LeaveRequest* request,
                                           proto::LeaveResponse* response) {
  absl::Status st = shard_->Leave(*request);
  absl::StatusOr<proto::LeaveResponse> result =
      st.ok() ? absl::StatusOr<proto::LeaveResponse>(proto::LeaveResponse())
              : absl::StatusOr<proto::LeaveResponse>(st);
  return FinishNow(context, std::move(result), response);
}

}  // namespace orrery::server
