// The learner's side of the PushStream RPC (proto/parameter_server.proto): one bidirectional
// stream per shard, opened on first use and kept open across pushes, so a push costs one message
// each way instead of a call. Everything runs on the caller's thread through one completion queue
// that only this object polls: no gRPC thread and no thread hop sits in a push's path.
//
// A push on a stream ends one of three ways: the shard answered (its verdict, as the unary Push
// would have returned it); the deadline passed (the stream is cancelled: the push may or may not
// have been applied, like a unary call's DEADLINE_EXCEEDED); or the stream ended without an answer
// (broken connection, shard shutting down, stream credentials refused, or a shard that does not
// know PushStream). In the last case the caller sends the push again as a unary Push, whose
// retries, re-registration and errors are the authority; a push that did reach the shard is then
// answered ALREADY_EXISTS, which the client counts as success.
//
// A push may go as several messages (a push in parts, PushRequest.part/parts): they are written
// one after another on the stream, each produced as the one before is handed to gRPC, and the
// shard answers once, after the last.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include <grpcpp/completion_queue.h>
#include <grpcpp/generic/generic_stub.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace orrery::server {

// Not thread-safe: one caller at a time.
class PushStreams {
 public:
  enum class Outcome { kAnswered, kDeadline, kNoAnswer };
  struct Result {
    Outcome outcome = Outcome::kNoAnswer;
    absl::Status status;  // kAnswered: the shard's verdict; otherwise why there is none
  };

  // `stubs[s]` (borrowed, outliving this) reaches shard s. A stream is reopened when less than
  // `min_remaining` of its `lifetime` (the call's deadline) is left.
  // `unstick`, if set, is called once when the destructor has waited a second for gRPC: it
  // must end the connections (gRPC returns no operation of a call whose bytes wait on a
  // connection the shard stopped reading, not even once the call is cancelled).
  PushStreams(std::vector<grpc::GenericStub*> stubs, absl::Duration lifetime,
              absl::Duration min_remaining, std::function<void()> unstick = nullptr);
  // Cancels the open streams and waits until gRPC has returned every operation.
  ~PushStreams();

  // False once shard s answered a stream with UNIMPLEMENTED (an older shard): push unary there.
  bool Supported(int shard) const { return supported_[shard]; }

  // Makes sure shard s has a stream to push on; true when it was opened just now, so the next
  // message on it is its first and must carry the job's credentials.
  bool Open(int shard);

  // Message `part` of the push to shards[k]: a serialised PushRequest of step `step`, one part
  // of a push in parts (PushRequest.part/parts) when parts[k] > 1. Called on the caller's thread,
  // in order, each part as soon as the one before has been handed to gRPC, so that encoding a
  // part overlaps sending the last. An error ends that shard's push without an answer
  // (kNoAnswer, the error).
  using PartSource = std::function<absl::StatusOr<grpc::ByteBuffer>(size_t k, int part)>;
  // Sends shards[k]'s push as parts[k] messages from `source` on its stream, opened with Open,
  // and waits for the answers (one per push) until `deadline`. One Result per shards[k].
  std::vector<Result> Push(const std::vector<int>& shards, const std::vector<int>& parts,
                           const PartSource& source, int64_t step, absl::Time deadline);

  // Handles what comes back from gRPC until `until` with no push in flight: cancelled streams
  // finish and are dropped, and a stream's last write completes.
  void Poll(absl::Time until);

 private:
  struct Stream;
  struct Op;

  // Handles one completed operation.
  void Complete(Op* op, bool ok);
  // Writes the next message of the push on `s` once the stream has started and its previous
  // write is back, and reads the answer alongside the first.
  void MaybeSend(Stream* stream);
  // Prepares the next message of the push on `s` from its source, if any is left to prepare.
  void Produce(Stream* stream);
  // Cancels `stream`; it is dropped once gRPC has returned its operations.
  void Retire(Stream* stream);
  // Calls Finish on a broken stream with no operation outstanding; drops finished ones.
  void Settle(Stream* stream);

  std::vector<grpc::GenericStub*> stubs_;
  const absl::Duration lifetime_;
  const absl::Duration min_remaining_;
  std::function<void()> unstick_;  // called once by the destructor when gRPC keeps it waiting
  grpc::CompletionQueue cq_;
  std::vector<bool> supported_;
  std::vector<Stream*> current_;                 // per shard, the stream to push on (or null)
  std::vector<std::unique_ptr<Stream>> streams_;  // every stream not yet returned by gRPC
};

}  // namespace orrery::server
