#include "server/server_main.h"

#include <pthread.h>
#include <signal.h>

#include <iostream>

#include <cstdio>

#include <glog/logging.h>

#include "nlohmann/json.hpp"

#include "server/memory_reuse.h"
#include "server/shard_server.h"

namespace orrery::server {
namespace {

// A tagged JSON line for the supervisor (scheduler/job_report.h ParseTagged reads it), flushed at
// once; text that is not UTF-8 (an error naming a path) is replaced rather than thrown on.
void PrintTagged(const char* tag, const nlohmann::json& body) {
  std::printf("%s %s\n", tag, body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  std::fflush(stdout);
}

}  // namespace

int RunServer(const ServerOptions& options) {
  sigset_t stop_signals, previous;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, &previous);

  KeepFreedMemoryForReuse();
  int exit_code = 0;
  {
    absl::StatusOr<std::unique_ptr<ShardServer>> server = ShardServer::Start(options);
    if (!server.ok()) {
      std::cerr << "orrery server: " << server.status().message() << std::endl;
      exit_code = 1;
    } else {
      const int shard = options.shard_index;
      if (const auto& restored = (*server)->restored()) {
        PrintTagged("ORRERY_SERVER_RESTORED",
                    {{"shard", shard}, {"version", restored->version}, {"samples_applied", restored->samples}});
      }
      (*server)->OnCheckpoint([shard](absl::StatusOr<uint64_t> version) {
        if (version.ok()) {
          PrintTagged("ORRERY_SERVER_CHECKPOINT", {{"shard", shard}, {"version", *version}});
        } else {  // for the runner to report: training goes on, unprotected
          PrintTagged("ORRERY_SERVER_CHECKPOINT_FAILED",
                      {{"shard", shard}, {"error", std::string(version.status().message())}});
        }
      });
      if (!(*server)->metrics_address().empty()) {
        std::cout << "ORRERY_SERVER_METRICS " << (*server)->metrics_address() << std::endl;
      }
      std::cout << "ORRERY_SERVER_READY " << (*server)->address() << std::endl;  // flushes
      int signal_number = 0;
      sigwait(&stop_signals, &signal_number);
      LOG(INFO) << "received signal " << signal_number << "; shutting down";
      (*server)->Shutdown();
    }
  }
  pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  return exit_code;
}

}  // namespace orrery::server
