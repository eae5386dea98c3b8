// The SQLite job store: what is written survives closing and reopening the file, as it must
// survive a scheduler killed with -9.
#include "scheduler/job_store.h"

#include <unistd.h>

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace orrery::scheduler {
namespace {

namespace fs = std::filesystem;

class JobStoreTest : public ::testing::Test {
 protected:
  JobStoreTest() {
    dir_ = fs::path(::testing::TempDir()) /
           absl::StrCat("job_store_test_", ::getpid(), "_",
                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    path_ = (dir_ / "jobs.db").string();
  }
  ~JobStoreTest() override { fs::remove_all(dir_); }

  std::unique_ptr<JobStore> Open() {
    absl::StatusOr<std::unique_ptr<JobStore>> store = JobStore::Open(path_);
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? std::move(*store) : nullptr;
  }

  static JobRecord Job(const std::string& name, int priority) {
    JobRecord r;
    r.name = name;
    r.spec_yaml = absl::StrCat("name: ", name, "\nmodel: m.yaml\n");
    r.base_dir = "/jobs";
    r.priority = priority;
    r.slots = 3;
    r.submitted_ms = 1700000000000;
    return r;
  }

  fs::path dir_;
  std::string path_;
};

TEST_F(JobStoreTest, InsertAssignsIncreasingIdsThatSurviveReopening) {
  {
    std::unique_ptr<JobStore> store = Open();
    JobRecord a = Job("a", 0), b = Job("b", 5);
    ASSERT_TRUE(store->Insert(&a).ok());
    ASSERT_TRUE(store->Insert(&b).ok());
    EXPECT_GT(b.id, a.id);
  }
  std::unique_ptr<JobStore> store = Open();
  absl::StatusOr<std::vector<JobRecord>> jobs = store->LoadAll();
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  ASSERT_EQ(jobs->size(), 2u);
  EXPECT_EQ((*jobs)[0].name, "a");
  EXPECT_EQ((*jobs)[1].name, "b");
  EXPECT_EQ((*jobs)[1].priority, 5);
  EXPECT_EQ((*jobs)[1].slots, 3);
  EXPECT_EQ((*jobs)[1].spec_yaml, "name: b\nmodel: m.yaml\n");
  EXPECT_EQ((*jobs)[1].state, JobState::kQueued);
  JobRecord c = Job("c", 0);
  ASSERT_TRUE(store->Insert(&c).ok());
  EXPECT_GT(c.id, (*jobs)[1].id) << "ids are never reused";
}

TEST_F(JobStoreTest, UpdatesAndProcessesRoundTrip) {
  int64_t id = 0;
  {
    std::unique_ptr<JobStore> store = Open();
    JobRecord r = Job("run", 1);
    ASSERT_TRUE(store->Insert(&r).ok());
    id = r.id;
    r.state = JobState::kRunning;
    r.started_ms = 1700000001000;
    r.log_dir = "/logs/job-1";
    r.boot_id = "boot";
    r.processes = {{"server-0", 100, 5000, 0, ""}, {"learner-0", 101, 5001, 0, ""}};
    ASSERT_TRUE(store->UpdateWithProcesses(r).ok());
    ProcessRecord learner{"learner-0", 102, 6000, 1, ""};
    ASSERT_TRUE(store->PutProcess(id, learner).ok());  // restarted: replaces by role
    ProcessRecord server{"server-0", 100, 5000, 0, "exit code 0"};
    ASSERT_TRUE(store->PutProcess(id, server).ok());
    r.state = JobState::kFailed;
    r.reason = "learner-0: exit code 3\nlast lines";
    r.cancel_requested = true;
    r.reattached = true;
    r.test_accuracy = 0.25;
    r.result_json = "{}";
    r.finished_ms = 1700000002000;
    ASSERT_TRUE(store->Update(r).ok());
  }
  std::unique_ptr<JobStore> store = Open();
  absl::StatusOr<std::vector<JobRecord>> jobs = store->LoadAll();
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  ASSERT_EQ(jobs->size(), 1u);
  const JobRecord& r = (*jobs)[0];
  EXPECT_EQ(r.id, id);
  EXPECT_EQ(r.state, JobState::kFailed);
  EXPECT_EQ(r.reason, "learner-0: exit code 3\nlast lines");
  EXPECT_TRUE(r.cancel_requested);
  EXPECT_TRUE(r.reattached);
  EXPECT_EQ(r.started_ms, 1700000001000);
  EXPECT_EQ(r.finished_ms, 1700000002000);
  EXPECT_EQ(r.log_dir, "/logs/job-1");
  EXPECT_EQ(r.boot_id, "boot");
  EXPECT_DOUBLE_EQ(r.test_accuracy, 0.25);
  EXPECT_EQ(r.result_json, "{}");
  ASSERT_EQ(r.processes.size(), 2u);
  EXPECT_EQ(r.processes[0].role, "server-0");
  EXPECT_EQ(r.processes[0].exit, "exit code 0");
  EXPECT_EQ(r.processes[1].role, "learner-0");
  EXPECT_EQ(r.processes[1].pid, 102);
  EXPECT_EQ(r.processes[1].start_ticks, 6000u);
  EXPECT_EQ(r.processes[1].incarnation, 1);
}

TEST_F(JobStoreTest, UpdateOfAnUnknownJobIsNotFound) {
  std::unique_ptr<JobStore> store = Open();
  JobRecord r = Job("ghost", 0);
  r.id = 42;
  EXPECT_EQ(store->Update(r).code(), absl::StatusCode::kNotFound);
}

TEST_F(JobStoreTest, UnopenableFileIsAnErrorNamingIt) {
  absl::StatusOr<std::unique_ptr<JobStore>> store = JobStore::Open((dir_ / "no" / "such" / "dir.db").string());
  ASSERT_FALSE(store.ok());
  EXPECT_NE(store.status().message().find("dir.db"), std::string::npos) << store.status();
}

TEST_F(JobStoreTest, UsesWriteAheadLogging) {
  std::unique_ptr<JobStore> store = Open();
  JobRecord r = Job("wal", 0);
  ASSERT_TRUE(store->Insert(&r).ok());
  EXPECT_TRUE(fs::exists(path_ + "-wal"));
}

}  // namespace
}  // namespace orrery::scheduler
