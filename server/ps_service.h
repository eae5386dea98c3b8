// The ParameterServer gRPC service: a thin adapter from the callback API to ParameterShard.
// Parked pulls hold no thread: each Pull is a ServerUnaryReactor finished by whichever call
// releases it; a cancelled call (client deadline, disconnect) withdraws its parked pull.
// Pull is registered as a byte-level method: its answer is serialised with the weight payloads
// pointing into the shard's weights, not copied (ShardStore::AnswerPull, SerializePullAnswer in
// server/aliased_serializer.h); the bytes are an ordinary PullResponse.
// PushStream keeps one reactor per open stream (server/push_stream_reactor.h).
#pragma once

#include "parameter_server.grpc.pb.h"
#include "server/parameter_shard.h"
#include "server/push_stream_reactor.h"

namespace orrery::server {

// The callback service, with PushStream and Pull byte-level (their typed callback versions are
// left out of the chain: a typed and a raw PushStream cannot both be declared). A method added to
// the proto must be added here too, or it is served by the synchronous base (UNIMPLEMENTED).
using PsServiceBase = proto::ParameterServer::WithRawCallbackMethod_PushStream<
    proto::ParameterServer::WithRawCallbackMethod_Pull<
        proto::ParameterServer::WithCallbackMethod_Register<
            proto::ParameterServer::WithCallbackMethod_Push<
                proto::ParameterServer::WithCallbackMethod_Stats<
                    proto::ParameterServer::WithCallbackMethod_Leave<
                        proto::ParameterServer::WithCallbackMethod_Init<
                            proto::ParameterServer::Service>>>>>>>;

class PsService final : public PsServiceBase {
 public:
  // `shard` is borrowed and must outlive the service and the gRPC server it is registered with.
  explicit PsService(ParameterShard* shard) : shard_(shard) {}

  grpc::ServerUnaryReactor* Register(grpc::CallbackServerContext* context,
                                     const proto::RegisterRequest* request,
                                     proto::RegisterResponse* response) override;
  grpc::ServerUnaryReactor* Init(grpc::CallbackServerContext* context,
                                 const proto::InitRequest* request,
                                 proto::InitResponse* response) override;
  grpc::ServerUnaryReactor* Push(grpc::CallbackServerContext* context,
                                 const proto::PushRequest* request,
                                 proto::PushResponse* response) override;
  // Serialised PushRequests in, serialised PushStreamResponses out (server/push_stream_reactor.h).
  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* PushStream(
      grpc::CallbackServerContext* context) override;
  // A serialised PullRequest in, a serialised PullResponse out.
  grpc::ServerUnaryReactor* Pull(grpc::CallbackServerContext* context,
                                 const grpc::ByteBuffer* request,
                                 grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* Stats(grpc::CallbackServerContext* context,
                                  const proto::StatsRequest* request,
                                  proto::StatsResponse* response) override;
  grpc::ServerUnaryReactor* Leave(grpc::CallbackServerContext* context,
                                  const proto::LeaveRequest* request,
                                  proto::LeaveResponse* response) override;

  // Ends the open push streams with UNAVAILABLE and refuses new ones. Call before the gRPC
  // server's Shutdown, which would otherwise wait for the streams until its deadline.
  void Shutdown() { push_streams_.Shutdown(); }

 private:
  ParameterShard* const shard_;
  PushStreamRegistry push_streams_;
};

}  // namespace orrery::server
