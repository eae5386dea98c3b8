// Subcommand registration for the orrery executable; each Add* wires one role's flags.
#pragma once

#include <functional>

#include "CLI/CLI.hpp"

namespace orrery::cli {

// Holds the action chosen by the parsed subcommand.
class Commands {
 public:
  void Set(std::function<int()> action) { action_ = std::move(action); }
  int Run() { return action_ ? action_() : 2; }

 private:
  std::function<int()> action_;
};

void AddTrainCommand(CLI::App& app, Commands& commands);
void AddDistributedCommands(CLI::App& app, Commands& commands);
void AddSchedulerCommands(CLI::App& app, Commands& commands);
void AddBackendCommands(CLI::App& app, Commands& commands);  // mpi-rank, slurm-rank, render-k8s

}  // namespace orrery::cli
