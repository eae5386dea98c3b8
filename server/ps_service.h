// The ParameterServer gRPC service: a thin adapter from the callback API to ParameterShard.
// Parked pulls hold no thread: each Pull is a ServerUnaryReactor finished by whichever call
// releases it; a cancelled call (client deadline, disconnect) withdraws its parked pull.
// Pull is registered as a byte-level method: its answer is serialised with the weight payloads
// aliased, not copied (server/aliased_serializer.h); the bytes are an ordinary PullResponse.
#pragma once

#include "parameter_server.grpc.pb.h"
#include "server/parameter_shard.h"

namespace orrery::server {

class PsService final
    : public proto::ParameterServer::WithRawCallbackMethod_Pull<
          proto::ParameterServer::CallbackService> {
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

 private:
  ParameterShard* const shard_;
};

}  // namespace orrery::server
