#include "server/push_streams.h"

#include <algorithm>
#include <utility>

#include <grpcpp/client_context.h>
#include <grpcpp/impl/codegen/proto_utils.h>

#include "glog/logging.h"
#include "parameter_server.pb.h"
#include "server/status_util.h"

namespace orrery::server {

const char kPushStreamMethod[] = "/orrery.proto.ParameterServer/PushStream";

struct PushStreams::Op {
  enum Kind { kStart, kWrite, kRead, kFinish };
  Kind kind;
  Stream* stream;
};

struct PushStreams::Stream {
  explicit Stream(int s) : shard(s) {}

  const int shard;
  grpc::ClientContext context;
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call;
  absl::Time expires;
  Op start{Op::kStart, this}, write{Op::kWrite, this}, read{Op::kRead, this},
      finish{Op::kFinish, this};
  int outstanding = 0;         // operations whose tags have not come back
  bool started = false;
  bool broken = false;         // an operation failed or we cancelled: no more pushes on it
  bool finish_called = false;
  bool finished = false;       // Finish's tag came back: `status` is the call's
  grpc::Status status;
  grpc::ByteBuffer out, in;    // the message being written; the answer being read
  // The push in flight on this stream, if any.
  const PartSource* source = nullptr;  // its messages
  size_t index = 0;            // the shard's index k in Push's arguments
  int parts = 0;               // messages in the push
  int produced = 0;            // of them, taken from `source`
  grpc::ByteBuffer next;       // the message to write next, when have_next
  bool have_next = false;
  bool writing = false;        // a Write's tag is outstanding
  bool want_read = false;      // the answer is still to be read (posted with the first write)
  absl::Status source_error;   // why `source` gave no message (the stream is then retired)
  int64_t step = 0;
  Result* result = nullptr;    // where its outcome goes; null when resolved (or none)
  bool answered = false;
  absl::Status answer;
};

PushStreams::PushStreams(std::vector<grpc::GenericStub*> stubs, absl::Duration lifetime,
                         absl::Duration min_remaining, std::function<void()> unstick)
    : stubs_(std::move(stubs)),
      lifetime_(lifetime),
      min_remaining_(min_remaining),
      unstick_(std::move(unstick)),
      supported_(stubs_.size(), true),
      current_(stubs_.size(), nullptr) {}

PushStreams::~PushStreams() {
  for (const std::unique_ptr<Stream>& s : streams_) {
    s->result = nullptr;
    if (!s->broken) Retire(s.get());
  }
  const absl::Time unstick_at = absl::Now() + absl::Seconds(1);
  while (!streams_.empty()) {
    void* tag = nullptr;
    bool ok = false;
    grpc::CompletionQueue::NextStatus next = grpc::CompletionQueue::SHUTDOWN;
    if (unstick_) {
      next = cq_.AsyncNext(&tag, &ok, absl::ToChronoTime(unstick_at));
    } else if (cq_.Next(&tag, &ok)) {
      next = grpc::CompletionQueue::GOT_EVENT;
    }
    if (next == grpc::CompletionQueue::TIMEOUT) {
      LOG(WARNING) << "push streams still busy a second after they were cancelled; ending their connections";
      std::exchange(unstick_, nullptr)();
      continue;
    }
    if (next != grpc::CompletionQueue::GOT_EVENT) break;  // not reached: the queue is shut down below
    Complete(static_cast<Op*>(tag), ok);
  }
  cq_.Shutdown();
  void* tag = nullptr;
  bool ok = false;
  while (cq_.Next(&tag, &ok)) {
  }
}

bool PushStreams::Open(int shard) {
  Stream* s = current_[shard];
  if (s != nullptr && !s->broken && s->expires - absl::Now() < min_remaining_) Retire(s);
  s = current_[shard];
  if (s != nullptr && !s->broken) return false;
  current_[shard] = nullptr;
  auto owned = std::make_unique<Stream>(shard);
  s = owned.get();
  s->expires = absl::Now() + lifetime_;
  s->context.set_deadline(absl::ToChronoTime(s->expires));
  s->call = stubs_[shard]->PrepareCall(&s->context, kPushStreamMethod, &cq_);
  if (s->call == nullptr) return true;  // Push answers kNoAnswer for it
  s->call->StartCall(&s->start);
  ++s->outstanding;
  streams_.push_back(std::move(owned));
  current_[shard] = s;
  return true;
}

std::vector<PushStreams::Result> PushStreams::Push(const std::vector<int>& shards,
                                                   const std::vector<int>& parts,
                                                   const PartSource& source, int64_t step,
                                                   absl::Time deadline) {
  std::vector<Result> results(shards.size());
  std::vector<Stream*> pending;  // streams whose push has no outcome yet
  for (size_t k = 0; k < shards.size(); ++k) {
    Stream* s = current_[shards[k]];
    if (s == nullptr || s->broken) {
      results[k] = {Outcome::kNoAnswer, absl::UnavailableError("no push stream to this shard")};
      continue;
    }
    s->source = &source;
    s->index = k;
    s->parts = std::max(1, parts[k]);
    s->produced = 0;
    s->step = step;
    s->result = &results[k];
    s->answered = false;
    s->want_read = true;
    s->source_error = absl::OkStatus();
    pending.push_back(s);
    Produce(s);    // part 0, before the stream may be ready for it
    MaybeSend(s);  // else once it has started, or its previous write's tag is back
  }
  // Records `s`'s outcome once it has one; a stream with a pending outcome is never dropped.
  auto resolve = [&](Stream* s) {
    if (s->answered && s->outstanding == 0) {
      *s->result = {Outcome::kAnswered, s->answer};
    } else if (s->finished) {
      absl::Status why = s->source_error.ok() ? FromGrpcStatus(s->status) : s->source_error;
      if (why.ok()) why = absl::UnavailableError("the shard closed the push stream");
      *s->result = {Outcome::kNoAnswer, why};
    } else {
      return;
    }
    s->result = nullptr;
    s->source = nullptr;  // this call's; never read after it returns
    pending.erase(std::find(pending.begin(), pending.end(), s));
    Settle(s);  // may drop it now
  };
  const auto chrono_deadline = absl::ToChronoTime(deadline);
  while (!pending.empty()) {
    void* tag = nullptr;
    bool ok = false;
    // TIMEOUT ends the wait; SHUTDOWN happens only in the destructor.
    if (cq_.AsyncNext(&tag, &ok, chrono_deadline) != grpc::CompletionQueue::GOT_EVENT) break;
    Stream* s = static_cast<Op*>(tag)->stream;
    const bool waited_for = s->result != nullptr;
    Complete(static_cast<Op*>(tag), ok);  // drops only streams nobody waits for
    if (waited_for) resolve(s);
  }
  for (Stream* s : pending) {  // the deadline passed
    s->source = nullptr;
    if (s->answered) {  // only the write's tag is still to come back
      *s->result = {Outcome::kAnswered, s->answer};
      s->result = nullptr;
    } else {
      *s->result = {Outcome::kDeadline,
                    absl::DeadlineExceededError(
                        "no answer to the push before its deadline; the push stream was "
                        "cancelled (the push may or may not have been applied)")};
      s->result = nullptr;
      Retire(s);
    }
  }
  return results;
}

void PushStreams::Poll(absl::Time until) {
  void* tag = nullptr;
  bool ok = false;
  const auto deadline = absl::ToChronoTime(until);
  while (cq_.AsyncNext(&tag, &ok, deadline) == grpc::CompletionQueue::GOT_EVENT) {
    Complete(static_cast<Op*>(tag), ok);  // no push waits on any of them now
  }
}

void PushStreams::MaybeSend(Stream* s) {
  if (s->broken || !s->started || s->writing || !s->have_next) return;
  s->out = std::move(s->next);
  s->have_next = false;
  s->call->Write(s->out, &s->write);
  s->writing = true;
  ++s->outstanding;
  if (s->want_read) {
    s->want_read = false;
    s->call->Read(&s->in, &s->read);
    ++s->outstanding;
  }
  Produce(s);  // the next part, while gRPC sends this one
}

void PushStreams::Produce(Stream* s) {
  if (s->broken || s->have_next || s->source == nullptr || s->produced >= s->parts) return;
  absl::StatusOr<grpc::ByteBuffer> message = (*s->source)(s->index, s->produced);
  ++s->produced;
  if (!message.ok()) {
    s->source_error = message.status();  // the push's outcome once the stream has ended
    Retire(s);
    return;
  }
  s->next = std::move(*message);
  s->have_next = true;
}

void PushStreams::Complete(Op* op, bool ok) {
  Stream* s = op->stream;
  --s->outstanding;
  switch (op->kind) {
    case Op::kStart:
      if (ok) {
        s->started = true;
      } else {
        s->broken = true;
      }
      break;
    case Op::kWrite:
      if (!ok) s->broken = true;
      s->writing = false;
      s->out.Clear();  // lets go of the request (and its payloads) as soon as gRPC has
      break;
    case Op::kRead: {
      proto::PushStreamResponse response;
      if (!ok) {
        s->broken = true;
      } else if (!grpc::SerializationTraits<proto::PushStreamResponse>::Deserialize(&s->in,
                                                                                  &response)
                      .ok() ||
                 response.step() != s->step || s->have_next || s->produced < s->parts) {
        // Not the answer to this push (or an answer before its last part was sent): trust
        // nothing more from this stream.
        s->broken = true;
        s->context.TryCancel();
      } else {
        const int code = response.code();
        s->answered = true;
        s->answer = code == 0 ? absl::OkStatus()
                              : absl::Status(code > 0 && code <= 16
                                                 ? static_cast<absl::StatusCode>(code)
                                                 : absl::StatusCode::kUnknown,
                                             response.message());
      }
      break;
    }
    case Op::kFinish:
      s->finished = true;
      if (s->status.error_code() == grpc::StatusCode::UNIMPLEMENTED) supported_[s->shard] = false;
      break;
  }
  MaybeSend(s);
  Settle(s);
}

void PushStreams::Retire(Stream* s) {
  s->broken = true;
  s->context.TryCancel();
  if (current_[s->shard] == s) current_[s->shard] = nullptr;
  Settle(s);
}

void PushStreams::Settle(Stream* s) {
  if (s->broken && !s->finish_called && s->outstanding == 0) {
    s->finish_called = true;
    s->call->Finish(&s->status, &s->finish);
    ++s->outstanding;
    return;
  }
  // A stream whose push still waits for its outcome stays until Push has read it.
  if (s->finished && s->outstanding == 0 && s->result == nullptr) {
    if (current_[s->shard] == s) current_[s->shard] = nullptr;
    auto it = std::find_if(streams_.begin(), streams_.end(),
                           [s](const std::unique_ptr<Stream>& p) { return p.get() == s; });
    if (it != streams_.end()) streams_.erase(it);
  }
}

}  // namespace orrery::server
