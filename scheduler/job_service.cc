#include "scheduler/job_service.h"

#include <chrono>
#include <condition_variable>
#include <deque>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/status_util.h"

namespace orrery::scheduler {
namespace {

using server::ToGrpcStatus;

// Runs `fn` on the loop thread and returns its result to the calling (RPC) thread.
template <typename Fn>
auto OnLoop(EventLoop& loop, Fn fn) -> decltype(fn()) {
  using T = decltype(fn());
  auto promise = std::make_shared<std::promise<T>>();
  std::future<T> result = promise->get_future();
  loop.Post([promise, fn = std::move(fn)]() mutable { promise->set_value(fn()); });
  return result.get();
}

// Items from the loop thread to one streaming RPC's thread. Holds at most `limit` items: a client
// that reads too slowly loses the oldest ones (and is told how many).
template <typename T>
class StreamQueue {
 public:
  explicit StreamQueue(size_t limit) : limit_(limit) {}

  void Push(T item) {
    std::lock_guard<std::mutex> lock(mu_);
    if (items_.size() >= limit_) {
      items_.pop_front();
      ++dropped_;
    }
    items_.push_back(std::move(item));
    cv_.notify_one();
  }
  void End() {
    std::lock_guard<std::mutex> lock(mu_);
    ended_ = true;
    cv_.notify_one();
  }
  // Waits up to `wait` for items, then moves them out. Returns true once the stream has ended and
  // nothing is left.
  bool Take(std::deque<T>* out, size_t* dropped, std::chrono::milliseconds wait) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, wait, [this] { return !items_.empty() || ended_; });
    out->swap(items_);
    items_.clear();
    *dropped = dropped_;
    dropped_ = 0;
    return ended_ && out->empty();
  }

 private:
  const size_t limit_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<T> items_;
  size_t dropped_ = 0;
  bool ended_ = false;
};

// How often a streaming call wakes up to notice a client that left or a server that closes.
constexpr std::chrono::milliseconds kStreamPoll(200);
constexpr size_t kStreamLimit = 100000;

// Constant time in the length of `expected`, so the token cannot be guessed byte by byte.
bool SameSecret(const std::string& given, const std::string& expected) {
  unsigned char diff = given.size() == expected.size() ? 0 : 1;
  for (size_t i = 0; i < expected.size(); ++i) {
    diff |= static_cast<unsigned char>(expected[i] ^ (i < given.size() ? given[i] : 0));
  }
  return diff == 0;
}

}  // namespace

proto::JobState JobStateToProto(JobState state) {
  switch (state) {
    case JobState::kQueued: return proto::JOB_QUEUED;
    case JobState::kRunning: return proto::JOB_RUNNING;
    case JobState::kSucceeded: return proto::JOB_SUCCEEDED;
    case JobState::kFailed: return proto::JOB_FAILED;
    case JobState::kCancelled: return proto::JOB_CANCELLED;
    case JobState::kLost: return proto::JOB_LOST;
  }
  return proto::JOB_STATE_UNSPECIFIED;
}

std::optional<JobState> JobStateFromProto(int state) {
  switch (state) {
    case proto::JOB_QUEUED: return JobState::kQueued;
    case proto::JOB_RUNNING: return JobState::kRunning;
    case proto::JOB_SUCCEEDED: return JobState::kSucceeded;
    case proto::JOB_FAILED: return JobState::kFailed;
    case proto::JOB_CANCELLED: return JobState::kCancelled;
    case proto::JOB_LOST: return JobState::kLost;
    default: return std::nullopt;
  }
}

proto::Job JobToProto(const JobRecord& r, const JobScheduler& scheduler, bool with_spec) {
  proto::Job job;
  job.set_id(r.id);
  job.set_name(r.name);
  job.set_state(JobStateToProto(r.state));
  job.set_priority(r.priority);
  job.set_slots(r.slots);
  job.set_backend(r.backend);
  job.set_reason(r.state == JobState::kQueued && r.reason.empty() ? scheduler.WaitingFor(r.id) : r.reason);
  job.set_cancel_requested(r.cancel_requested);
  job.set_submitted_unix_ms(r.submitted_ms);
  job.set_started_unix_ms(r.started_ms);
  job.set_finished_unix_ms(r.finished_ms);
  job.set_log_dir(r.log_dir);
  job.set_result_json(r.result_json);
  job.set_test_accuracy(r.test_accuracy);
  job.set_queue_position(scheduler.QueuePosition(r.id));
  job.set_reattached(r.reattached);
  if (with_spec) job.set_spec_yaml(r.spec_yaml);
  for (const ProcessRecord& p : r.processes) {
    proto::JobProcess* out = job.add_processes();
    out->set_role(p.role);
    out->set_pid(p.pid);
    out->set_incarnation(p.incarnation);
    out->set_exit(p.exit);
  }
  return job;
}

JobServiceImpl::JobServiceImpl(EventLoop& loop, JobScheduler& scheduler, std::string token)
    : loop_(loop), scheduler_(scheduler), expected_(absl::StrCat("Bearer ", token)) {}

grpc::Status JobServiceImpl::Authenticate(const grpc::ServerContext& context) const {
  const auto& metadata = context.client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end()) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "no bearer token: set ORRERY_SCHEDULER_TOKEN (or --token-file) to the scheduler's token");
  }
  if (!SameSecret(std::string(it->second.data(), it->second.size()), expected_)) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "wrong bearer token");
  }
  return grpc::Status::OK;
}

grpc::Status JobServiceImpl::Submit(grpc::ServerContext* context, const proto::SubmitRequest* request,
                                    proto::Job* response) {
  if (grpc::Status auth = Authenticate(*context); !auth.ok()) return auth;
  return OnLoop(loop_, [&] {
    absl::StatusOr<JobRecord> job = scheduler_.Submit(request->spec_yaml(), request->base_dir(), request->priority(),
                                                         request->backend());
    if (!job.ok()) return ToGrpcStatus(job.status());
    *response = JobToProto(*job, scheduler_, /*with_spec=*/false);
    return grpc::Status::OK;
  });
}

grpc::Status JobServiceImpl::Get(grpc::ServerContext* context, const proto::GetRequest* request,
                                 proto::Job* response) {
  if (grpc::Status auth = Authenticate(*context); !auth.ok()) return auth;
  return OnLoop(loop_, [&] {
    absl::StatusOr<JobRecord> job = scheduler_.Get(request->job());
    if (!job.ok()) return ToGrpcStatus(job.status());
    *response = JobToProto(*job, scheduler_, /*with_spec=*/true);
    return grpc::Status::OK;
  });
}

grpc::Status JobServiceImpl::List(grpc::ServerContext* context, const proto::ListRequest* request,
                                  proto::ListResponse* response) {
  if (grpc::Status auth = Authenticate(*context); !auth.ok()) return auth;
  std::set<int> states(request->states().begin(), request->states().end());
  return OnLoop(loop_, [&] {
    for (const JobRecord& r : scheduler_.List()) {
      if (!states.empty() && states.count(JobStateToProto(r.state)) == 0) continue;
      *response->add_jobs() = JobToProto(r, scheduler_, /*with_spec=*/false);
    }
    return grpc::Status::OK;
  });
}

grpc::Status JobServiceImpl::Cancel(grpc::ServerContext* context, const proto::CancelRequest* request,
                                    proto::Job* response) {
  if (grpc::Status auth = Authenticate(*context); !auth.ok()) return auth;
  return OnLoop(loop_, [&] {
    absl::StatusOr<JobRecord> job = scheduler_.Cancel(request->job());
    if (!job.ok()) return ToGrpcStatus(job.status());
    *response = JobToProto(*job, scheduler_, /*with_spec=*/false);
    return grpc::Status::OK;
  });
}

grpc::Status JobServiceImpl::Logs(grpc::ServerContext* context, const proto::LogsRequest* request,
                                  grpc::ServerWriter<proto::LogLine>* writer) {
  if (grpc::Status auth = Authenticate(*context); !auth.ok()) return auth;
  auto queue = std::make_shared<StreamQueue<std::string>>(kStreamLimit);
  struct Opening {
    grpc::Status status;
    std::vector<std::string> lines;
    std::optional<WatchId> watch;
  };
  JobScheduler& scheduler = scheduler_;
  // Reading the files and starting the live watch in one loop turn: no line is missed or doubled.
  Opening opening = OnLoop(loop_, [&] {
    Opening o;
    absl::StatusOr<JobRecord> job = scheduler.Get(request->job());
    if (!job.ok()) {
      o.status = ToGrpcStatus(job.status());
      return o;
    }
    absl::StatusOr<std::vector<std::string>> lines =
        scheduler.ReadLogs(job->id, request->tail() > 0 ? static_cast<size_t>(request->tail()) : 0);
    if (!lines.ok()) {
      o.status = ToGrpcStatus(lines.status());
      return o;
    }
    o.lines = std::move(*lines);
    if (request->follow()) {
      o.watch = scheduler.WatchLines(
          job->id, [queue](const std::string& line) { queue->Push(line); }, [queue] { queue->End(); });
    }
    return o;
  });
  if (!opening.status.ok()) return opening.status;
  bool client_gone = false;
  proto::LogLine out;
  for (std::string& line : opening.lines) {
    out.set_line(std::move(line));
    if (!writer->Write(out)) {
      client_gone = true;
      break;
    }
  }
  if (opening.watch) {
    while (!client_gone && !context->IsCancelled() && !closed_) {
      std::deque<std::string> lines;
      size_t dropped = 0;
      const bool ended = queue->Take(&lines, &dropped, kStreamPoll);
      if (dropped > 0) {
        out.set_line(absl::StrCat("[orrery logs: ", dropped, " lines dropped: the client read too slowly]"));
        client_gone = !writer->Write(out);
      }
      for (std::string& line : lines) {
        if (client_gone) break;
        out.set_line(std::move(line));
        client_gone = !writer->Write(out);
      }
      if (ended) break;
    }
    const WatchId watch = *opening.watch;
    loop_.Post([&scheduler, watch] { scheduler.Unwatch(watch); });
  }
  return grpc::Status::OK;
}

grpc::Status JobServiceImpl::Events(grpc::ServerContext* context, const proto::EventsRequest* request,
                                    grpc::ServerWriter<proto::JobEvent>* writer) {
  if (grpc::Status auth = Authenticate(*context); !auth.ok()) return auth;
  auto queue = std::make_shared<StreamQueue<proto::Job>>(kStreamLimit);
  JobScheduler& scheduler = scheduler_;
  struct Opening {
    grpc::Status status;
    WatchId watch = 0;
  };
  Opening opening = OnLoop(loop_, [&] {
    Opening o;
    std::optional<int64_t> only;
    if (!request->job().empty()) {
      absl::StatusOr<JobRecord> job = scheduler.Get(request->job());
      if (!job.ok()) {
        o.status = ToGrpcStatus(job.status());
        return o;
      }
      only = job->id;
      queue->Push(JobToProto(*job, scheduler, false));
      if (IsTerminal(job->state)) queue->End();
    } else {
      for (const JobRecord& r : scheduler.List()) queue->Push(JobToProto(r, scheduler, false));
    }
    o.watch = scheduler.WatchJobs([queue, only, &scheduler](const JobRecord& r) {
      if (only && r.id != *only) return;
      queue->Push(JobToProto(r, scheduler, false));
      if (only && IsTerminal(r.state)) queue->End();  // a single job's events end with it
    });
    return o;
  });
  if (!opening.status.ok()) return opening.status;
  bool client_gone = false;
  proto::JobEvent event;
  while (!client_gone && !context->IsCancelled() && !closed_) {
    std::deque<proto::Job> jobs;
    size_t dropped = 0;
    const bool ended = queue->Take(&jobs, &dropped, kStreamPoll);
    for (proto::Job& job : jobs) {
      *event.mutable_job() = std::move(job);
      if (!writer->Write(event)) {
        client_gone = true;
        break;
      }
    }
    if (ended) break;
  }
  const WatchId watch = opening.watch;
  loop_.Post([&scheduler, watch] { scheduler.Unwatch(watch); });
  return grpc::Status::OK;
}

}  // namespace orrery::scheduler
