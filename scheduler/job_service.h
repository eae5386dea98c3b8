// The scheduler daemon's gRPC JobService: a thin adapter that checks each request's bearer token,
// hands the request to the JobScheduler on its loop thread and turns records into protos.
#pragma once

#include <atomic>
#include <optional>
#include <string>

#include <grpcpp/grpcpp.h>

#include "scheduler.grpc.pb.h"
#include "scheduler/event_loop.h"
#include "scheduler/job_scheduler.h"

namespace orrery::scheduler {

// The state a proto names; nullopt for JOB_STATE_UNSPECIFIED and unknown values.
std::optional<JobState> JobStateFromProto(int state);
proto::JobState JobStateToProto(JobState state);

// The proto of a job, with its queue position and, while it is queued, why it waits (in `reason`)
// as `scheduler` says; `spec_yaml` only when `with_spec`.
proto::Job JobToProto(const JobRecord& record, const JobScheduler& scheduler, bool with_spec);

// Threads: RPCs run on gRPC's threads; each one posts its work to `loop` and waits for it, so the
// scheduler is only touched on the loop thread. Unary calls therefore need the loop running;
// streaming calls (Logs with follow, Events) return once Close() is called or the client leaves.
class JobServiceImpl final : public proto::JobService::Service {
 public:
  // `loop` and `scheduler` are borrowed and must outlive the service. Requests must carry
  // `authorization: Bearer <token>`; `token` must not be empty.
  JobServiceImpl(EventLoop& loop, JobScheduler& scheduler, std::string token);

  grpc::Status Submit(grpc::ServerContext* context, const proto::SubmitRequest* request, proto::Job* response) override;
  grpc::Status Get(grpc::ServerContext* context, const proto::GetRequest* request, proto::Job* response) override;
  grpc::Status List(grpc::ServerContext* context, const proto::ListRequest* request,
                    proto::ListResponse* response) override;
  grpc::Status Cancel(grpc::ServerContext* context, const proto::CancelRequest* request, proto::Job* response) override;
  grpc::Status Logs(grpc::ServerContext* context, const proto::LogsRequest* request,
                    grpc::ServerWriter<proto::LogLine>* writer) override;
  grpc::Status Events(grpc::ServerContext* context, const proto::EventsRequest* request,
                      grpc::ServerWriter<proto::JobEvent>* writer) override;

  // Makes streaming calls end soon (before the server shuts down). Any thread.
  void Close() { closed_ = true; }

 private:
  grpc::Status Authenticate(const grpc::ServerContext& context) const;

  EventLoop& loop_;
  JobScheduler& scheduler_;
  const std::string expected_;  // "Bearer <token>"
  std::atomic<bool> closed_{false};
};

}  // namespace orrery::scheduler
