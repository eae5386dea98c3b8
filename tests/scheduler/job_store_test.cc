// The SQLite job store: what is written survives closing and reopening the file, as it must
// survive a scheduler killed with -9.
#include "scheduler/job_store.h"

#include <unistd.h>

#include <sqlite3.h>

#include <filesystem>
#include <fstream>

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

  // Runs `sql` on the store's file directly, as another program or a person would.
  bool ExecSql(const std::string& sql) const {
    sqlite3* db = nullptr;
    const bool ok = sqlite3_open(path_.c_str(), &db) == SQLITE_OK &&
                    sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr) == SQLITE_OK;
    sqlite3_close(db);
    return ok;
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
    ProcessRecord learner{"learner-0", 102, 6000, 1, "", R"({"argv":["orrery","learner"]})"};
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
  EXPECT_EQ(r.processes[1].relaunch, R"({"argv":["orrery","learner"]})");
}

// A store written by an orrery of schema version 1 (before processes.relaunch) opens, keeps what
// it holds, and stores the new column from then on.
TEST_F(JobStoreTest, AVersionOneStoreGainsTheRelaunchColumn) {
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
    const char* v1 = R"sql(
CREATE TABLE jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, spec_yaml TEXT NOT NULL,
  base_dir TEXT NOT NULL, priority INTEGER NOT NULL, slots INTEGER NOT NULL, backend TEXT NOT NULL,
  state TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '', cancel_requested INTEGER NOT NULL DEFAULT 0,
  reattached INTEGER NOT NULL DEFAULT 0, submitted_ms INTEGER NOT NULL,
  started_ms INTEGER NOT NULL DEFAULT 0, finished_ms INTEGER NOT NULL DEFAULT 0,
  log_dir TEXT NOT NULL DEFAULT '', result_json TEXT NOT NULL DEFAULT '',
  test_accuracy REAL NOT NULL DEFAULT 0, boot_id TEXT NOT NULL DEFAULT '');
CREATE TABLE processes (job_id INTEGER NOT NULL REFERENCES jobs(id), role TEXT NOT NULL,
  pid INTEGER NOT NULL, start_ticks INTEGER NOT NULL, incarnation INTEGER NOT NULL,
  exit TEXT NOT NULL DEFAULT '', PRIMARY KEY (job_id, role));
INSERT INTO jobs (name, spec_yaml, base_dir, priority, slots, backend, state, submitted_ms)
  VALUES ('old', 'name: old', '/jobs', 0, 2, 'local', 'running', 1700000000000);
INSERT INTO processes (job_id, role, pid, start_ticks, incarnation) VALUES (1, 'learner-0', 42, 7, 0);
PRAGMA user_version = 1;
)sql";
    ASSERT_EQ(sqlite3_exec(db, v1, nullptr, nullptr, nullptr), SQLITE_OK) << sqlite3_errmsg(db);
    sqlite3_close(db);
  }
  {
    std::unique_ptr<JobStore> store = Open();
    ASSERT_NE(store, nullptr);
    absl::StatusOr<std::vector<JobRecord>> jobs = store->LoadAll();
    ASSERT_TRUE(jobs.ok()) << jobs.status();
    ASSERT_EQ(jobs->size(), 1u);
    ASSERT_EQ((*jobs)[0].processes.size(), 1u);
    EXPECT_EQ((*jobs)[0].processes[0].pid, 42);
    EXPECT_EQ((*jobs)[0].processes[0].relaunch, "");
    ProcessRecord learner = (*jobs)[0].processes[0];
    learner.relaunch = R"({"argv":["x"]})";
    ASSERT_TRUE(store->PutProcess(1, learner).ok());
  }
  std::unique_ptr<JobStore> store = Open();  // reopening a version 2 store alters nothing
  absl::StatusOr<std::vector<JobRecord>> jobs = store->LoadAll();
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  EXPECT_EQ((*jobs)[0].processes[0].relaunch, R"({"argv":["x"]})");
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

// Another program's SQLite database given as the store by mistake: refused, and left as it was
// (no Orrery tables, journal mode, permissions).
TEST_F(JobStoreTest, AnotherProgramsDatabaseIsRefusedAndLeftUnchanged) {
  ASSERT_TRUE(ExecSql("CREATE TABLE jobs (a, b); INSERT INTO jobs VALUES (1, 2);"));
  fs::permissions(path_, fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read |
                             fs::perms::others_read);
  absl::StatusOr<std::unique_ptr<JobStore>> store = JobStore::Open(path_);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(store.status().message().find("something else"), std::string::npos) << store.status();
  EXPECT_NE(store.status().message().find(path_), std::string::npos) << store.status();
  EXPECT_EQ(fs::status(path_).permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read |
                fs::perms::others_read);
  EXPECT_FALSE(fs::exists(path_ + "-wal"));
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
  std::string tables, mode;
  auto collect = [](void* out, int, char** values, char**) {
    *static_cast<std::string*>(out) += std::string(values[0]) + ";";
    return 0;
  };
  sqlite3_exec(db, "SELECT name FROM sqlite_master ORDER BY name", collect, &tables, nullptr);
  sqlite3_exec(db, "PRAGMA journal_mode", collect, &mode, nullptr);
  sqlite3_close(db);
  EXPECT_EQ(tables, "jobs;");
  EXPECT_EQ(mode, "delete;");
}

// A file that is not a database at all: refused naming it.
TEST_F(JobStoreTest, AFileThatIsNotADatabaseIsRefusedNamingIt) {
  {
    std::ofstream out(path_, std::ios::binary);
    out << std::string(4096, 'x');
  }
  absl::StatusOr<std::unique_ptr<JobStore>> store = JobStore::Open(path_);
  ASSERT_FALSE(store.ok());
  EXPECT_NE(store.status().message().find("not a database"), std::string::npos) << store.status();
  EXPECT_NE(store.status().message().find(path_), std::string::npos) << store.status();
}

// A row no daemon writes (an edited file) is refused naming the job.
TEST_F(JobStoreTest, ARowWithAnUnknownStateOrNegativeSlotsIsRefusedNamingTheJob) {
  int64_t id = 0;
  {
    std::unique_ptr<JobStore> store = Open();
    JobRecord a = Job("a", 0);
    ASSERT_TRUE(store->Insert(&a).ok());
    id = a.id;
  }
  for (const char* edit : {"UPDATE jobs SET state = 'bogus'", "UPDATE jobs SET slots = -100"}) {
    SCOPED_TRACE(edit);
    ASSERT_TRUE(ExecSql("UPDATE jobs SET state = 'queued', slots = 3"));
    ASSERT_TRUE(ExecSql(edit));
    std::unique_ptr<JobStore> store = Open();
    absl::StatusOr<std::vector<JobRecord>> jobs = store->LoadAll();
    ASSERT_FALSE(jobs.ok());
    EXPECT_EQ(jobs.status().code(), absl::StatusCode::kDataLoss);
    EXPECT_NE(jobs.status().message().find(absl::StrCat("job ", id)), std::string::npos) << jobs.status();
  }
}

// It holds the jobs' tokens: readable by its owner only, its write-ahead log too.
TEST_F(JobStoreTest, OnlyItsOwnerMayReadIt) {
  {
    std::unique_ptr<JobStore> store = Open();
    JobRecord r = Job("secret", 0);
    ASSERT_TRUE(store->Insert(&r).ok());
    for (const std::string& file : {path_, path_ + "-wal"}) {
      ASSERT_TRUE(fs::exists(file)) << file;
      EXPECT_EQ(fs::status(file).permissions() & fs::perms::all,
                fs::perms::owner_read | fs::perms::owner_write)
          << file;
    }
  }
  // A store an older orrery left readable by others is tightened when it is opened.
  fs::permissions(path_, fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read |
                             fs::perms::others_read);
  ASSERT_NE(Open(), nullptr);
  EXPECT_EQ(fs::status(path_).permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write);
}

TEST_F(JobStoreTest, UsesWriteAheadLogging) {
  std::unique_ptr<JobStore> store = Open();
  JobRecord r = Job("wal", 0);
  ASSERT_TRUE(store->Insert(&r).ok());
  EXPECT_TRUE(fs::exists(path_ + "-wal"));
}

}  // namespace
}  // namespace orrery::scheduler
