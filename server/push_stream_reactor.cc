#include "server/push_stream_reactor.h"

#include <algorithm>
#include <utility>

#include <grpcpp/impl/codegen/proto_utils.h>
#include <grpcpp/support/proto_buffer_reader.h>

#include "absl/strings/str_cat.h"
#include "server/status_util.h"

namespace orrery::server {
namespace {

const grpc::Status& ShuttingDown() {
  static const grpc::Status* status = new grpc::Status(
      grpc::StatusCode::UNAVAILABLE, "the shard is shutting down");
  return *status;
}

// A received message and the reader over it: the payloads DecodePushRequest leaves in the
// reader's buffers stay valid while both live.
struct ReceivedMessage {
  grpc::ByteBuffer bytes;
  std::unique_ptr<grpc::ProtoBufferReader> reader;
};

// Takes `message` (leaving it empty) as a push whose gradients stay in its slices.
absl::StatusOr<ReceivedPush> Decode(grpc::ByteBuffer* message) {
  auto received = std::make_shared<ReceivedMessage>();
  received->bytes.Swap(message);
  received->reader = std::make_unique<grpc::ProtoBufferReader>(&received->bytes);
  if (!received->reader->status().ok()) {
    return absl::InvalidArgumentError("malformed PushRequest: unreadable message");
  }
  grpc::ProtoBufferReader* reader = received->reader.get();
  return DecodePushRequest(reader, std::move(received));
}

}  // namespace

bool PushStreamRegistry::Add(PushStreamReactor* reactor) {
  absl::MutexLock lock(&mu_);
  if (shutting_down_) return false;
  open_.push_back(reactor);
  return true;
}

void PushStreamRegistry::Remove(PushStreamReactor* reactor) {
  absl::MutexLock lock(&mu_);
  auto it = std::find(open_.begin(), open_.end(), reactor);
  if (it != open_.end()) {
    *it = open_.back();
    open_.pop_back();
  }
}

void PushStreamRegistry::Shutdown() {
  std::vector<PushStreamReactor*> open;
  {
    absl::MutexLock lock(&mu_);
    shutting_down_ = true;
    open = open_;
    for (PushStreamReactor* r : open) r->Ref();  // keeps each alive past its OnDone
  }
  for (PushStreamReactor* r : open) {
    r->Close();
    r->Unref();
  }
}

PushStreamReactor::PushStreamReactor(ParameterShard* shard, PushStreamRegistry* registry)
    : shard_(shard), registry_(registry) {
  if (!registry_->Add(this)) {
    FinishOnce(ShuttingDown());
    return;
  }
  StartRead(&request_);
}

void PushStreamReactor::Close() {
  {
    absl::MutexLock lock(&mu_);
    closing_ = true;
    if (busy_) return;  // OnWriteDone finishes after the answer in flight
  }
  FinishOnce(ShuttingDown());  // the pending read then fails and finds the call finished
}

void PushStreamReactor::OnReadDone(bool ok) {
  if (!ok) {  // the client closed its side, or the call was cancelled or has ended
    FinishOnce(grpc::Status::OK);
    return;
  }
  {
    absl::MutexLock lock(&mu_);
    if (finished_ || closing_) return;  // Close finishes the call (it saw us idle)
    busy_ = true;
  }
  // The message's slices now belong to the push (its gradients point into them).
  absl::StatusOr<ReceivedPush> push = Decode(&request_);
  if (!push.ok()) {
    FinishOnce(ToGrpcStatus(push.status()));  // nothing of a push in progress is applied
    return;
  }
  const proto::PushRequest& request = push->request;
  absl::Status st;
  if (!authenticated_) {
    // The stream's credentials: checked once; a refusal ends the stream, nothing applied.
    st = shard_->CheckCredentials(request.job_id(), request.token());
    if (!st.ok()) {
      FinishOnce(ToGrpcStatus(st));
      return;
    }
    authenticated_ = true;
  } else if (!request.job_id().empty() || !request.token().empty()) {
    st = shard_->CheckCredentials(request.job_id(), request.token());
  }
  if (request.parts() > 1 || !parts_.empty()) {  // a push in parts
    if (!st.ok()) {
      FinishOnce(ToGrpcStatus(st));  // in its middle: nothing of it is applied
    } else if (TakePart(*std::move(push))) {
      ReadNextOrClose();  // its next part (a close applies nothing of it)
    }
    return;
  }
  const int64_t step = request.step();
  // The push (and the slices it keeps) goes when answered: a stream lives as long as its
  // learner, and every learner would otherwise hold its shard's part of the model.
  Answer(step,
         st.ok() ? shard_->PushAuthenticated(*push) : absl::StatusOr<proto::PushResponse>(st));
}

bool PushStreamReactor::TakePart(ReceivedPush push) {
  const proto::PushRequest& request = push.request;
  const proto::PushRequest& first = parts_.empty() ? request : parts_.front().request;
  const uint32_t expected = static_cast<uint32_t>(parts_.size());
  if (request.part() != expected || request.parts() != first.parts() ||
      request.step() != first.step() || request.learner_id() != first.learner_id()) {
    FinishOnce(grpc::Status(
        grpc::StatusCode::INVALID_ARGUMENT,
        absl::StrCat("push part ", request.part(), " of ", request.parts(), " (learner ",
                     request.learner_id(), ", step ", request.step(),
                     ") does not continue the push in parts in progress (part ", expected,
                     " of ", first.parts(), ", learner ", first.learner_id(), ", step ",
                     first.step(), "); nothing of it was applied")));
    return false;
  }
  parts_.push_back(std::move(push));
  // Checked now, while gRPC receives the next part (within the stream's flow-control window).
  if (absl::Status st = shard_->CheckPushPart(parts_.back(), &parts_finite_); !st.ok()) {
    // Not worth receiving the rest: the stream ends, and the learner's unary Push of the whole
    // gradient gets (and counts) the shard's verdict.
    parts_.clear();
    FinishOnce(ToGrpcStatus(st));
    return false;
  }
  if (parts_.size() < parts_.back().request.parts()) return true;
  const int64_t step = parts_.front().request.step();
  absl::StatusOr<proto::PushResponse> result =
      shard_->PushParts(std::exchange(parts_, {}), std::exchange(parts_finite_, true));
  Answer(step, result);
  return false;
}

void PushStreamReactor::Answer(int64_t step,
                               const absl::StatusOr<proto::PushResponse>& result) {
  proto::PushStreamResponse response;
  response.set_step(step);
  if (result.ok()) {
    response.set_version(result->version());
  } else {
    response.set_code(static_cast<int32_t>(result.status().code()));
    response.set_message(std::string(result.status().message()));
  }
  bool own_buffer = false;
  response_.Clear();
  if (!grpc::SerializationTraits<proto::PushStreamResponse>::Serialize(response, &response_,
                                                                         &own_buffer)
           .ok()) {
    FinishOnce(grpc::Status(grpc::StatusCode::INTERNAL, "cannot serialise a push's answer"));
    return;
  }
  StartWrite(&response_);
}

void PushStreamReactor::OnWriteDone(bool ok) {
  if (!ok) {  // the call broke; Finish is still owed for OnDone to come
    FinishOnce(grpc::Status(grpc::StatusCode::CANCELLED, "the push stream broke"));
    return;
  }
  ReadNextOrClose();
}

void PushStreamReactor::ReadNextOrClose() {
  bool close;
  {
    absl::MutexLock lock(&mu_);
    busy_ = false;
    close = closing_;
  }
  if (close) {
    FinishOnce(ShuttingDown());
  } else {
    StartRead(&request_);  // last: the next reaction may start at once, on another thread
  }
}

void PushStreamReactor::OnDone() {
  registry_->Remove(this);
  Unref();
}

void PushStreamReactor::FinishOnce(const grpc::Status& status) {
  {
    absl::MutexLock lock(&mu_);
    if (finished_) return;
    finished_ = true;
  }
  Finish(status);
}

}  // namespace orrery::server
