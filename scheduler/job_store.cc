#include "scheduler/job_store.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace orrery::scheduler {
namespace {

// 2: processes.relaunch.
constexpr int kSchemaVersion = 2;

constexpr char kSchema[] = R"sql(
CREATE TABLE IF NOT EXISTS jobs (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  name TEXT NOT NULL,
  spec_yaml TEXT NOT NULL,
  base_dir TEXT NOT NULL,
  priority INTEGER NOT NULL,
  slots INTEGER NOT NULL,
  backend TEXT NOT NULL,
  state TEXT NOT NULL,
  reason TEXT NOT NULL DEFAULT '',
  cancel_requested INTEGER NOT NULL DEFAULT 0,
  reattached INTEGER NOT NULL DEFAULT 0,
  submitted_ms INTEGER NOT NULL,
  started_ms INTEGER NOT NULL DEFAULT 0,
  finished_ms INTEGER NOT NULL DEFAULT 0,
  log_dir TEXT NOT NULL DEFAULT '',
  result_json TEXT NOT NULL DEFAULT '',
  test_accuracy REAL NOT NULL DEFAULT 0,
  boot_id TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS processes (
  job_id INTEGER NOT NULL REFERENCES jobs(id),
  role TEXT NOT NULL,
  pid INTEGER NOT NULL,
  start_ticks INTEGER NOT NULL,
  incarnation INTEGER NOT NULL,
  exit TEXT NOT NULL DEFAULT '',
  relaunch TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (job_id, role)
);
)sql";

constexpr char kInsertJob[] =
    "INSERT INTO jobs (name, spec_yaml, base_dir, priority, slots, backend, state, reason, cancel_requested,"
    " reattached, submitted_ms, started_ms, finished_ms, log_dir, result_json, test_accuracy, boot_id)"
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)";
constexpr char kUpdateJob[] =
    "UPDATE jobs SET name = ?1, spec_yaml = ?2, base_dir = ?3, priority = ?4, slots = ?5, backend = ?6,"
    " state = ?7, reason = ?8, cancel_requested = ?9, reattached = ?10, submitted_ms = ?11,"
    " started_ms = ?12, finished_ms = ?13, log_dir = ?14, result_json = ?15, test_accuracy = ?16,"
    " boot_id = ?17 WHERE id = ?18";
// An upsert keeps the row (and so the order in which the job started its processes).
constexpr char kPutProcess[] =
    "INSERT INTO processes (job_id, role, pid, start_ticks, incarnation, exit, relaunch)"
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
    " ON CONFLICT (job_id, role) DO UPDATE SET pid = excluded.pid, start_ticks = excluded.start_ticks,"
    " incarnation = excluded.incarnation, exit = excluded.exit, relaunch = excluded.relaunch";
constexpr char kDeleteProcesses[] = "DELETE FROM processes WHERE job_id = ?1";
constexpr char kSelectJobs[] =
    "SELECT id, name, spec_yaml, base_dir, priority, slots, backend, state, reason, cancel_requested,"
    " reattached, submitted_ms, started_ms, finished_ms, log_dir, result_json, test_accuracy, boot_id"
    " FROM jobs ORDER BY id";
constexpr char kSelectProcesses[] =
    "SELECT job_id, role, pid, start_ticks, incarnation, exit, relaunch FROM processes ORDER BY job_id, rowid";

// Resets a prepared statement when the scope ends, whatever happened.
class Reset {
 public:
  explicit Reset(sqlite3_stmt* stmt) : stmt_(stmt) {}
  ~Reset() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }

 private:
  sqlite3_stmt* stmt_;
};

void BindText(sqlite3_stmt* stmt, int index, const std::string& text) {
  sqlite3_bind_text(stmt, index, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT);
}

std::string ColumnText(sqlite3_stmt* stmt, int column) {
  const unsigned char* text = sqlite3_column_text(stmt, column);
  if (text == nullptr) return "";
  return std::string(reinterpret_cast<const char*>(text), static_cast<size_t>(sqlite3_column_bytes(stmt, column)));
}

}  // namespace

absl::StatusOr<std::unique_ptr<JobStore>> JobStore::Open(const std::string& path) {
  // The store holds the jobs' tokens (processes.relaunch): only its owner may read it. A new
  // store is created so; SQLite creates the -wal and -shm files with the main file's
  // permissions. An existing store is tightened by Init once it is known to be ours.
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd >= 0) ::close(fd);  // else it exists, or is not creatable: sqlite3_open_v2 says why
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                           nullptr);
  if (rc != SQLITE_OK) {
    std::string message = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close(db);
    return absl::InternalError(absl::StrCat("job store ", path, ": cannot open: ", message));
  }
  std::unique_ptr<JobStore> store(new JobStore(db, path));
  RETURN_IF_ERROR(store->Init());
  return store;
}

JobStore::~JobStore() {
  for (auto& [sql, stmt] : statements_) sqlite3_finalize(stmt);
  sqlite3_close(db_);
}

absl::Status JobStore::Error(const std::string& what) const {
  return absl::InternalError(absl::StrCat("job store ", path_, ": ", what, ": ", sqlite3_errmsg(db_)));
}

absl::Status JobStore::Exec(const char* sql) {
  char* message = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &message) != SQLITE_OK) {
    std::string text = message != nullptr ? message : "unknown error";
    sqlite3_free(message);
    return absl::InternalError(absl::StrCat("job store ", path_, ": ", text));
  }
  return absl::OkStatus();
}

absl::Status JobStore::Init() {
  // Another process holding the file (a second daemon on the same store) gets a clear error
  // after a few seconds rather than corrupting anything.
  sqlite3_busy_timeout(db_, 5000);
  RETURN_IF_ERROR(Exec("SELECT 1 FROM sqlite_master LIMIT 1"));  // "file is not a database"
  ASSIGN_OR_RETURN(sqlite3_stmt * version, Prepare("PRAGMA user_version"));
  int current = 0;
  {
    Reset reset(version);
    if (sqlite3_step(version) == SQLITE_ROW) current = sqlite3_column_int(version, 0);
  }
  if (current > kSchemaVersion) {
    return absl::FailedPreconditionError(absl::StrCat("job store ", path_, ": schema version ", current,
                                                      " is newer than this orrery's (", kSchemaVersion, ")"));
  }
  if (current == 0) {
    // Version 0 with tables in it: another program's database, given as --store by mistake.
    // Refused before anything of it is changed (journal mode, permissions, tables).
    ASSIGN_OR_RETURN(sqlite3_stmt * tables, Prepare("SELECT count(*) FROM sqlite_master"));
    int count = 0;
    {
      Reset reset(tables);
      if (sqlite3_step(tables) == SQLITE_ROW) count = sqlite3_column_int(tables, 0);
    }
    if (count > 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "job store ", path_, ": is an SQLite database of something else (", count,
          " tables, no Orrery schema version); give the scheduler a new file or its own store"));
    }
  }
  for (const std::string& file : {path_, path_ + "-wal", path_ + "-shm"}) {
    const int fd = ::open(file.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) continue;  // absent (-wal, -shm)
    ::fchmod(fd, 0600);
    ::close(fd);
  }
  RETURN_IF_ERROR(Exec("PRAGMA journal_mode = WAL"));
  RETURN_IF_ERROR(Exec("PRAGMA synchronous = FULL"));
  RETURN_IF_ERROR(Exec("PRAGMA foreign_keys = ON"));
  RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  absl::Status st = Exec(kSchema);
  // A version 1 store (from an older orrery) gains the column its table lacks.
  if (st.ok() && current == 1) st = Exec("ALTER TABLE processes ADD COLUMN relaunch TEXT NOT NULL DEFAULT ''");
  if (st.ok()) st = Exec(absl::StrCat("PRAGMA user_version = ", kSchemaVersion).c_str());
  if (!st.ok()) {
    Exec("ROLLBACK").IgnoreError();
    return st;
  }
  return Exec("COMMIT");
}

absl::StatusOr<sqlite3_stmt*> JobStore::Prepare(const char* sql) {
  for (auto& [text, stmt] : statements_) {
    if (text == sql) return stmt;
  }
  sqlite3_stmt* stmt = nullptr;
  if (sqlite3_prepare_v2(db_, sql, -1, &stmt, nullptr) != SQLITE_OK) return Error("prepare");
  statements_.emplace_back(sql, stmt);
  return stmt;
}

namespace {
// Binds the job's columns as ?1..?17 (the order of kInsertJob and kUpdateJob).
void BindJob(sqlite3_stmt* stmt, const JobRecord& r) {
  BindText(stmt, 1, r.name);
  BindText(stmt, 2, r.spec_yaml);
  BindText(stmt, 3, r.base_dir);
  sqlite3_bind_int(stmt, 4, r.priority);
  sqlite3_bind_int(stmt, 5, r.slots);
  BindText(stmt, 6, r.backend);
  BindText(stmt, 7, JobStateName(r.state));
  BindText(stmt, 8, r.reason);
  sqlite3_bind_int(stmt, 9, r.cancel_requested ? 1 : 0);
  sqlite3_bind_int(stmt, 10, r.reattached ? 1 : 0);
  sqlite3_bind_int64(stmt, 11, r.submitted_ms);
  sqlite3_bind_int64(stmt, 12, r.started_ms);
  sqlite3_bind_int64(stmt, 13, r.finished_ms);
  BindText(stmt, 14, r.log_dir);
  BindText(stmt, 15, r.result_json);
  sqlite3_bind_double(stmt, 16, r.test_accuracy);
  BindText(stmt, 17, r.boot_id);
}

// Rolls back unless committed.
class Transaction {
 public:
  explicit Transaction(sqlite3* db) : db_(db) { ok_ = sqlite3_exec(db_, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) == SQLITE_OK; }
  ~Transaction() {
    if (ok_ && !committed_) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  }
  bool begun() const { return ok_; }
  bool Commit() {
    committed_ = sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr) == SQLITE_OK;
    return committed_;
  }

 private:
  sqlite3* db_;
  bool ok_ = false;
  bool committed_ = false;
};
}  // namespace

absl::Status JobStore::WriteProcess(int64_t job_id, const ProcessRecord& p) {
  ASSIGN_OR_RETURN(sqlite3_stmt * stmt, Prepare(kPutProcess));
  Reset reset(stmt);
  sqlite3_bind_int64(stmt, 1, job_id);
  BindText(stmt, 2, p.role);
  sqlite3_bind_int(stmt, 3, p.pid);
  sqlite3_bind_int64(stmt, 4, static_cast<int64_t>(p.start_ticks));
  sqlite3_bind_int(stmt, 5, p.incarnation);
  BindText(stmt, 6, p.exit);
  BindText(stmt, 7, p.relaunch);
  if (sqlite3_step(stmt) != SQLITE_DONE) return Error(absl::StrCat("store process ", p.role, " of job ", job_id));
  return absl::OkStatus();
}

absl::Status JobStore::Insert(JobRecord* record) {
  Transaction tx(db_);
  if (!tx.begun()) return Error("begin");
  {
    ASSIGN_OR_RETURN(sqlite3_stmt * stmt, Prepare(kInsertJob));
    Reset reset(stmt);
    BindJob(stmt, *record);
    if (sqlite3_step(stmt) != SQLITE_DONE) return Error("insert job");
  }
  const int64_t id = sqlite3_last_insert_rowid(db_);
  for (const ProcessRecord& p : record->processes) RETURN_IF_ERROR(WriteProcess(id, p));
  if (!tx.Commit()) return Error("commit");
  record->id = id;
  return absl::OkStatus();
}

absl::Status JobStore::WriteJob(const JobRecord& record) {
  ASSIGN_OR_RETURN(sqlite3_stmt * stmt, Prepare(kUpdateJob));
  Reset reset(stmt);
  BindJob(stmt, record);
  sqlite3_bind_int64(stmt, 18, record.id);
  if (sqlite3_step(stmt) != SQLITE_DONE) return Error(absl::StrCat("update job ", record.id));
  if (sqlite3_changes(db_) == 0) return absl::NotFoundError(absl::StrCat("job store: no job ", record.id));
  return absl::OkStatus();
}

absl::Status JobStore::Update(const JobRecord& record) { return WriteJob(record); }

absl::Status JobStore::UpdateWithProcesses(const JobRecord& record) {
  Transaction tx(db_);
  if (!tx.begun()) return Error("begin");
  RETURN_IF_ERROR(WriteJob(record));
  {
    ASSIGN_OR_RETURN(sqlite3_stmt * stmt, Prepare(kDeleteProcesses));
    Reset reset(stmt);
    sqlite3_bind_int64(stmt, 1, record.id);
    if (sqlite3_step(stmt) != SQLITE_DONE) return Error(absl::StrCat("replace processes of job ", record.id));
  }
  for (const ProcessRecord& p : record.processes) RETURN_IF_ERROR(WriteProcess(record.id, p));
  if (!tx.Commit()) return Error("commit");
  return absl::OkStatus();
}

absl::Status JobStore::PutProcess(int64_t job_id, const ProcessRecord& process) {
  return WriteProcess(job_id, process);
}

absl::StatusOr<std::vector<JobRecord>> JobStore::LoadAll() {
  std::vector<JobRecord> jobs;
  {
    ASSIGN_OR_RETURN(sqlite3_stmt * stmt, Prepare(kSelectJobs));
    Reset reset(stmt);
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
      JobRecord r;
      r.id = sqlite3_column_int64(stmt, 0);
      r.name = ColumnText(stmt, 1);
      r.spec_yaml = ColumnText(stmt, 2);
      r.base_dir = ColumnText(stmt, 3);
      r.priority = sqlite3_column_int(stmt, 4);
      r.slots = sqlite3_column_int(stmt, 5);
      if (r.slots < 0) {
        // Only an edited file holds one: the daemon would count it as slots freed.
        return absl::DataLossError(absl::StrCat("job store ", path_, ": job ", r.id, " holds ", r.slots,
                                                " slots; fix or delete that row (the store was not changed)"));
      }
      r.backend = ColumnText(stmt, 6);
      const std::string state = ColumnText(stmt, 7);
      std::optional<JobState> parsed = ParseJobState(state);
      if (!parsed) {
        return absl::DataLossError(absl::StrCat("job store ", path_, ": job ", r.id, " has unknown state '", state,
                                                "'; fix or delete that row (the store was not changed)"));
      }
      r.state = *parsed;
      r.reason = ColumnText(stmt, 8);
      r.cancel_requested = sqlite3_column_int(stmt, 9) != 0;
      r.reattached = sqlite3_column_int(stmt, 10) != 0;
      r.submitted_ms = sqlite3_column_int64(stmt, 11);
      r.started_ms = sqlite3_column_int64(stmt, 12);
      r.finished_ms = sqlite3_column_int64(stmt, 13);
      r.log_dir = ColumnText(stmt, 14);
      r.result_json = ColumnText(stmt, 15);
      r.test_accuracy = sqlite3_column_double(stmt, 16);
      r.boot_id = ColumnText(stmt, 17);
      jobs.push_back(std::move(r));
    }
    if (rc != SQLITE_DONE) return Error("read jobs");
  }
  ASSIGN_OR_RETURN(sqlite3_stmt * stmt, Prepare(kSelectProcesses));
  Reset reset(stmt);
  size_t j = 0;
  int rc;
  while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
    const int64_t job_id = sqlite3_column_int64(stmt, 0);
    while (j < jobs.size() && jobs[j].id < job_id) ++j;
    if (j == jobs.size() || jobs[j].id != job_id) continue;  // (foreign keys make this unreachable)
    ProcessRecord p;
    p.role = ColumnText(stmt, 1);
    p.pid = sqlite3_column_int(stmt, 2);
    p.start_ticks = static_cast<uint64_t>(sqlite3_column_int64(stmt, 3));
    p.incarnation = sqlite3_column_int(stmt, 4);
    p.exit = ColumnText(stmt, 5);
    p.relaunch = ColumnText(stmt, 6);
    jobs[j].processes.push_back(std::move(p));
  }
  if (rc != SQLITE_DONE) return Error("read processes");
  return jobs;
}

}  // namespace orrery::scheduler
