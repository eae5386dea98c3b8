// One process at a time: an exclusive advisory lock (flock(2)) on a file, held while a FileLock
// lives. The kernel drops it when the holder exits, however it exits, so a crashed holder never
// leaves a stale lock behind; the descriptor is close-on-exec, so child processes do not keep it.
// Used where two processes must not share a file: a scheduler's job store, an `orrery run`'s log
// directory, a shard's checkpoint.
#pragma once

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace orrery {

class FileLock {
 public:
  // Opens (creating) `path` and locks it without waiting; the holder's pid is written into it.
  // When another process holds it: FAILED_PRECONDITION "<what> is in use by <by> (pid N);
  // <advice>", e.g. what "--store /srv/jobs.db", by "another scheduler". UNAVAILABLE when the
  // file cannot be opened or locked.
  static absl::StatusOr<FileLock> Acquire(const std::string& path, absl::string_view what, absl::string_view by,
                                          absl::string_view advice) {
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
      return absl::UnavailableError(absl::StrCat("cannot open lock file ", path, ": ", std::strerror(errno)));
    }
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      const int error = errno;
      const std::string holder = ReadHolder(fd);
      ::close(fd);
      if (error != EWOULDBLOCK) {
        return absl::UnavailableError(absl::StrCat("cannot lock ", path, ": ", std::strerror(error)));
      }
      return absl::FailedPreconditionError(absl::StrCat(what, " is in use by ", by,
                                                        holder.empty() ? "" : absl::StrCat(" (pid ", holder, ")"),
                                                        "; ", advice));
    }
    const std::string pid = absl::StrCat(::getpid(), "\n");
    // Best effort: should this fail, the lock still holds; a refused holder's message lacks the pid.
    const bool pid_written =
        ::ftruncate(fd, 0) == 0 && ::pwrite(fd, pid.data(), pid.size(), 0) == static_cast<ssize_t>(pid.size());
    static_cast<void>(pid_written);
    return FileLock(fd);
  }

  FileLock(FileLock&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  FileLock& operator=(FileLock&& other) noexcept {
    if (this != &other) {
      Release();
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;
  ~FileLock() { Release(); }

 private:
  explicit FileLock(int fd) : fd_(fd) {}
  void Release() {
    if (fd_ >= 0) ::close(fd_);  // closing the last descriptor drops the lock
    fd_ = -1;
  }
  // The pid a holder wrote, or "" when there is none (yet) or it is not a number.
  static std::string ReadHolder(int fd) {
    char buf[32] = {};
    const ssize_t n = ::pread(fd, buf, sizeof(buf) - 1, 0);
    if (n <= 0) return "";
    int pid = 0;
    absl::string_view text = absl::StripTrailingAsciiWhitespace(absl::string_view(buf, static_cast<size_t>(n)));
    return absl::SimpleAtoi(text, &pid) && pid > 0 ? std::string(text) : "";
  }

  int fd_ = -1;
};

}  // namespace orrery
