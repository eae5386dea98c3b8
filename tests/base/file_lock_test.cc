#include "base/file_lock.h"

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

extern char** environ;

namespace orrery {
namespace {

using ::testing::HasSubstr;

class FileLockTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / absl::StrCat("orrery-file-lock-", ::getpid());
    std::filesystem::create_directories(dir_);
    path_ = (dir_ / "x.lock").string();
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  absl::StatusOr<FileLock> Lock() { return FileLock::Acquire(path_, "thing x", "another user", "try later"); }

  std::filesystem::path dir_;
  std::string path_;
};

TEST_F(FileLockTest, ASecondHolderIsRefusedNamingTheFirstUntilItLetsGo) {
  std::optional<FileLock> first;
  {
    absl::StatusOr<FileLock> lock = Lock();
    ASSERT_TRUE(lock.ok()) << lock.status();
    first = std::move(*lock);
  }
  absl::StatusOr<FileLock> second = Lock();
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(second.status().message(), absl::StrCat("thing x is in use by another user (pid ", ::getpid(), "); try later"));
  first.reset();
  EXPECT_TRUE(Lock().ok());
}

TEST_F(FileLockTest, AMovedLockStaysHeld) {
  absl::StatusOr<FileLock> lock = Lock();
  ASSERT_TRUE(lock.ok());
  FileLock moved = std::move(*lock);
  FileLock assigned = std::move(moved);
  EXPECT_FALSE(Lock().ok());
}

TEST_F(FileLockTest, AKilledHolderLeavesNoStaleLock) {
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    absl::StatusOr<FileLock> lock = Lock();
    const char c = lock.ok() ? 'y' : 'n';
    if (::write(ready[1], &c, 1) != 1) ::_exit(3);
    ::pause();  // until killed, holding the lock
    ::_exit(0);
  }
  ::close(ready[1]);
  char c = 0;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  ::close(ready[0]);
  ASSERT_EQ(c, 'y');
  absl::StatusOr<FileLock> refused = Lock();
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr(absl::StrCat("(pid ", child, ")")));
  ::kill(child, SIGKILL);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(Lock().ok()) << "the kernel drops a dead holder's lock";
}

TEST_F(FileLockTest, AChildProcessDoesNotKeepItsParentsLock) {
  pid_t child = -1;
  {
    absl::StatusOr<FileLock> lock = Lock();
    ASSERT_TRUE(lock.ok());
    const char* argv[] = {"sleep", "30", nullptr};
    ASSERT_EQ(::posix_spawnp(&child, "sleep", nullptr, nullptr, const_cast<char**>(argv), environ), 0);
  }
  // The parent let go while its child still runs: had the child inherited the descriptor, the
  // lock would still be held.
  absl::StatusOr<FileLock> again = Lock();
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  EXPECT_TRUE(again.ok()) << again.status();
}

TEST_F(FileLockTest, AnUnopenablePathIsUnavailableNamingIt) {
  absl::StatusOr<FileLock> lock = FileLock::Acquire((dir_ / "missing" / "x.lock").string(), "x", "y", "z");
  ASSERT_FALSE(lock.ok());
  EXPECT_EQ(lock.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(lock.status().message()), HasSubstr("missing/x.lock"));
}

}  // namespace
}  // namespace orrery
