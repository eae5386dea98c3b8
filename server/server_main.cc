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
      if (auto v = (*server)->restored_version()) {
        std::cout << "ORRERY_SERVER_RESTORED {\"shard\":" << options.shard_index
                  << ",\"version\":" << *v << ",\"samples_applied\":" << (*server)->restored_samples() << "}"
                  << std::endl;
      }
      (*server)->OnCheckpoint([shard = options.shard_index](absl::StatusOr<uint64_t> version) {
        if (version.ok()) {
          std::printf("ORRERY_SERVER_CHECKPOINT {\"shard\":%d,\"version\":%llu}\n", shard,
                      static_cast<unsigned long long>(*version));
        } else {  // for the runner to report: training goes on, unprotected
          nlohmann::json body = {{"shard", shard}, {"error", std::string(version.status().message())}};
          std::printf("ORRERY_SERVER_CHECKPOINT_FAILED %s\n",
                      body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
        }
        std::fflush(stdout);
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
