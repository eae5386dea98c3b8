#include "scheduler/backends/file_rendezvous.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "base/replace_file.h"

namespace orrery::scheduler {
namespace {

namespace fs = std::filesystem;

bool ReadWhole(const fs::path& path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::ostringstream s;
  s << in.rdbuf();
  *out = s.str();
  return true;
}

}  // namespace

absl::StatusOr<std::unique_ptr<FileRendezvous>> FileRendezvous::Create(const std::string& dir, int rank,
                                                                       int size, absl::Duration poll_interval) {
  if (size < 1 || rank < 0 || rank >= size) {
    return absl::InvalidArgumentError(absl::StrCat("rendezvous: rank ", rank, " is not in [0, ", size, ")"));
  }
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("rendezvous: cannot create ", dir, ": ", ec.message()));
  return std::unique_ptr<FileRendezvous>(new FileRendezvous(dir, rank, size, poll_interval));
}

absl::Status FileRendezvous::Publish(const std::string& name, const std::string& content) const {
  const fs::path final_path = fs::path(dir_) / name;
  const fs::path tmp = fs::path(dir_) / absl::StrCat(".", name, ".tmp");
  absl::Status st = ReplaceFile(final_path.string(), tmp.string(), content);
  if (!st.ok()) return absl::UnavailableError(absl::StrCat("rendezvous: ", st.message()));
  return absl::OkStatus();
}

absl::Status FileRendezvous::CheckAborted() const {
  std::string reason;
  if (ReadWhole(fs::path(dir_) / "abort", &reason)) {
    while (!reason.empty() && reason.back() == '\n') reason.pop_back();
    return absl::AbortedError(absl::StrCat("the job was aborted by ", reason));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> FileRendezvous::AllGather(const std::string& value,
                                                                   absl::Duration timeout) {
  const int k = gathers_++;
  if (absl::Status st = Publish(absl::StrCat("gather-", k, "-", rank_), value); !st.ok()) return st;
  const absl::Time deadline = absl::Now() + timeout;
  std::vector<std::string> values(size_);
  std::vector<bool> have(size_, false);
  int missing = size_;
  for (;;) {
    if (absl::Status st = CheckAborted(); !st.ok()) return st;
    for (int r = 0; r < size_; ++r) {
      if (!have[r] && ReadWhole(fs::path(dir_) / absl::StrCat("gather-", k, "-", r), &values[r])) {
        have[r] = true;
        --missing;
      }
    }
    if (missing == 0) return values;
    if (absl::Now() >= deadline) {
      std::string absent;
      for (int r = 0; r < size_; ++r) {
        if (!have[r]) absl::StrAppend(&absent, absent.empty() ? "" : ", ", r);
      }
      return absl::DeadlineExceededError(absl::StrCat("rendezvous in ", dir_, ": rank(s) ", absent,
                                                      " did not arrive within ", absl::FormatDuration(timeout)));
    }
    absl::SleepFor(poll_interval_);
  }
}

absl::Status FileRendezvous::Arrive(int phase) {
  return Publish(absl::StrCat("barrier-", phase, "-", rank_), "");
}

absl::StatusOr<bool> FileRendezvous::Test(int phase) {
  if (absl::Status st = CheckAborted(); !st.ok()) return st;
  for (int r = 0; r < size_; ++r) {
    std::error_code ec;
    if (!fs::exists(fs::path(dir_) / absl::StrCat("barrier-", phase, "-", r), ec)) return false;
  }
  return true;
}

void FileRendezvous::Abort(int /*code*/, const std::string& reason) {
  // link() publishes atomically and fails if an abort is already there: the first reason wins.
  const std::string tmp = (fs::path(dir_) / absl::StrCat(".abort-", rank_, ".tmp")).string();
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << "rank " << rank_ << ": " << reason << "\n";
  }
  ::link(tmp.c_str(), (fs::path(dir_) / "abort").c_str());
  ::unlink(tmp.c_str());
}

}  // namespace orrery::scheduler
