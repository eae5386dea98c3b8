// The shard's side of the PushStream RPC (proto/parameter_server.proto): one reactor per open
// stream, answering each PushRequest with a PushStreamResponse from ParameterShard, and the
// registry that lets a shutting-down service end the streams that are still open (gRPC's own
// Shutdown would otherwise wait for them until its deadline).
#pragma once

#include <atomic>
#include <string>
#include <vector>

#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/server_callback.h>

#include "absl/synchronization/mutex.h"
#include "parameter_server.pb.h"
#include "server/parameter_shard.h"
#include "server/push_decoder.h"

namespace orrery::server {

class PushStreamReactor;

// Thread-safe.
class PushStreamRegistry {
 public:
  // False once Shutdown has begun: the stream must end at once.
  bool Add(PushStreamReactor* reactor);
  void Remove(PushStreamReactor* reactor);
  // Ends every open stream with UNAVAILABLE (a stream in the middle of a push first sends that
  // push's answer) and refuses streams opened from now on. Does not wait for them to finish.
  void Shutdown();

 private:
  absl::Mutex mu_;
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<PushStreamReactor*> open_ ABSL_GUARDED_BY(mu_);
};

// One PushStream call. gRPC runs its reactions one at a time; Close may come from any thread.
// Deletes itself when gRPC is done with it and no one else holds a reference. The stream is
// byte-level: each PushRequest is read by DecodePushRequest (server/push_decoder.h), its
// gradients left in the received slices instead of copied, and each answer is serialised here.
class PushStreamReactor final
    : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  // Both borrowed; they must outlive every stream (the service and its server own them).
  PushStreamReactor(ParameterShard* shard, PushStreamRegistry* registry);

  // Asks the stream to end with UNAVAILABLE; returns at once.
  void Close();

  void Ref() { refs_.fetch_add(1, std::memory_order_relaxed); }
  void Unref() {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnDone() override;

 private:
  // Finishes the call once; later calls do nothing.
  void FinishOnce(const grpc::Status& status);
  // Takes `push` as a part of a push in parts (PushRequest.parts > 1). Returns false when it
  // has answered the push or ended the stream; true when the push needs its next part.
  bool TakePart(ReceivedPush push);
  // Idle until the next message: reads it, or finishes the stream when Close asked meanwhile.
  void ReadNextOrClose();
  // Writes the answer to the push of `step`.
  void Answer(int64_t step, const absl::StatusOr<proto::PushResponse>& result);

  ParameterShard* const shard_;
  PushStreamRegistry* const registry_;
  std::atomic<int> refs_{1};  // gRPC's, dropped in OnDone

  // Touched only by the reactions, which gRPC serialises.
  grpc::ByteBuffer request_;   // the message being read
  grpc::ByteBuffer response_;  // the answer being written
  bool authenticated_ = false;
  // The push in parts being received: its parts so far and their checks.
  std::vector<ReceivedPush> parts_;
  bool parts_finite_ = true;  // every value of the parts so far is finite

  absl::Mutex mu_;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool busy_ ABSL_GUARDED_BY(mu_) = false;  // between a message read and its answer written
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace orrery::server
