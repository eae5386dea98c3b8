// Helpers for the backend tests: fresh directories, a tiny training job (the MLP on 3,000
// images, one epoch, one shard and two learners), running a backend's loop until every process
// has exited, and finding the processes a job left behind.
#pragma once

#include <dirent.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/proc_stat.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "scheduler/backend.h"
#include "scheduler/backends/job_spec_yaml.h"
#include "scheduler/event_loop.h"
#include "scheduler/job_spec.h"

namespace orrery::scheduler::testing {

// A new empty directory named after the running test.
inline std::string FreshDir(const std::string& what) {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::filesystem::path dir = std::filesystem::path(::testing::TempDir()) /
                              absl::StrCat(what, "_", ::getpid(), "_", info ? info->name() : "suite");
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

// The tiny job, written to DIR/job.yaml; `epochs` makes it longer for cancel tests.
inline JobSpec TinyJob(const std::string& dir, const std::string& name, double epochs = 1) {
  const std::string yaml = absl::StrCat("name: ", name, "\nmodel: ", ORRERY_SOURCE_DIR,
                                        "/examples/models/mlp.yaml\nservers: 1\nlearners: 2\nprotocol: async\n"
                                        "lr: {base: 0.05}\nbatch: 32\nepochs: ",
                                        epochs, "\nlimit_train: 3000\nlimit_test: 1000\neval_every_seconds: 2\n");
  absl::StatusOr<JobSpec> job = ParseJobSpec(yaml, dir);
  EXPECT_TRUE(job.ok()) << job.status();
  EXPECT_TRUE(WriteJobSpecFile(*job, dir + "/job.yaml").ok());
  return *job;
}

// Everything a backend reported, by role.
struct Recorder {
  std::map<std::string, std::vector<std::string>> lines;  // stdout and stderr
  std::map<std::string, ProcessExit> exits;
  void Attach(Backend& backend) {
    backend.AddLineListener([this](const OutputLine& l) { lines[l.role].push_back(l.text); });
    backend.AddExitListener([this](const ProcessExit& e) { exits[e.role] = e; });
  }
  bool Saw(const std::string& role, const std::string& prefix) const {
    auto it = lines.find(role);
    if (it == lines.end()) return false;
    for (const std::string& l : it->second) {
      if (l.rfind(prefix, 0) == 0) return true;
    }
    return false;
  }
  // The evaluator's final ORRERY_EVAL body.
  std::optional<nlohmann::json> FinalEval(const std::string& role = "evaluator") const {
    auto it = lines.find(role);
    if (it == lines.end()) return std::nullopt;
    for (const std::string& l : it->second) {
      if (l.rfind("ORRERY_EVAL ", 0) != 0) continue;
      nlohmann::json body = nlohmann::json::parse(l.substr(12), nullptr, false);
      if (!body.is_discarded() && body.value("final", false)) return body;
    }
    return std::nullopt;
  }
  std::string Dump() const {
    std::ostringstream s;
    for (const auto& [role, ls] : lines) {
      for (const std::string& l : ls) s << role << ": " << l.substr(0, 300) << "\n";
    }
    for (const auto& [role, e] : exits) s << role << " exit: " << e.status.ToString() << " " << e.error << "\n";
    return s.str();
  }
};

// Runs `loop` until `done()` (a condition outside the loop, checked every 50 ms) or `timeout`.
inline bool PollUntil(EventLoop& loop, const std::function<bool()>& done, absl::Duration timeout) {
  const TimerId tick = loop.RunEvery(absl::Milliseconds(50), [] {});
  const bool ok = loop.RunUntil(done, timeout);
  loop.Cancel(tick);
  return ok;
}

// Pids of live processes (other than this one) whose command line contains `needle`.
inline std::vector<pid_t> ProcessesWith(const std::string& needle) {
  std::vector<pid_t> out;
  DIR* dir = ::opendir("/proc");
  if (dir == nullptr) return out;
  while (dirent* e = ::readdir(dir)) {
    const pid_t pid = static_cast<pid_t>(std::atoi(e->d_name));
    if (pid <= 0 || pid == ::getpid()) continue;
    std::ifstream in(absl::StrCat("/proc/", pid, "/cmdline"));
    std::string cmdline((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const std::vector<std::string> stat = ProcStatFields(pid);
    const bool zombie = !stat.empty() && stat[0] == "Z";
    if (!zombie && cmdline.find(needle) != std::string::npos) out.push_back(pid);
  }
  ::closedir(dir);
  return out;
}

}  // namespace orrery::scheduler::testing
