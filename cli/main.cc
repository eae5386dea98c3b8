// The orrery executable: parses flags and environment into the chosen role's object graph and runs
// it. Exit codes: 0 success, 1 the command failed (one line on stderr says why), 2 bad usage.
#include <glog/logging.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/synchronization/mutex.h"
#include "cli/commands.h"
#include "cli/log_relay.h"

int main(int argc, char** argv) {
  // Debian's abseil keeps a lock-order graph for every Mutex (its debug deadlock detector); in
  // shards and learners that bookkeeping costs 2-3% of the CPU (GraphCycles in profiles). The
  // tests keep it on, where a lock-order cycle should fail loudly.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  orrery::cli::RelayOutputIfItsReaderDies();  // before any output (see cli/log_relay.h)
  google::InitGoogleLogging(argv[0]);
  FLAGS_logtostderr = true;
  FLAGS_minloglevel = google::GLOG_WARNING;

  CLI::App app{"Orrery: distributed asynchronous training of neural networks (parameter servers over gRPC)."};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Print help for every subcommand");
  orrery::cli::Commands commands;
  orrery::cli::AddTrainCommand(app, commands);
  orrery::cli::AddDistributedCommands(app, commands);
  orrery::cli::AddSchedulerCommands(app, commands);
  orrery::cli::AddBackendCommands(app, commands);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::string what = e.what();
    if (what.empty()) what = e.get_name();
    // CLI11 reads a mistyped subcommand as a stray argument and says only that one is required.
    if (argc > 1 && argv[1][0] != '-' && app.get_subcommands().empty()) {
      std::string known;
      for (const CLI::App* sub : app.get_subcommands([](const CLI::App* a) {
             return !a->get_group().empty();  // not the hidden ones
           })) {
        known += (known.empty() ? "" : ", ") + sub->get_name();
      }
      what = "unknown subcommand '" + std::string(argv[1]) + "'; the subcommands are " + known;
    }
    std::fprintf(stderr, "orrery: %s (see orrery --help)\n", what.c_str());
    return 2;
  }
  const int code = commands.Run();
  orrery::cli::RecordExitCode(code);  // for a scheduler that re-attaches to this process
  return code;
}
