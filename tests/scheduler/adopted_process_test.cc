// What a restarted scheduler daemon reads of processes it adopted: their start times and the exit
// codes they recorded beside their logs.
#include "scheduler/adopted_process.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace orrery::scheduler {
namespace {

class RecordedExitCodeTest : public ::testing::Test {
 protected:
  RecordedExitCodeTest()
      : dir_(std::filesystem::path(::testing::TempDir()) / absl::StrCat("exit_records_", ::getpid())),
        log_((dir_ / "learner-0.log").string()) {
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  ~RecordedExitCodeTest() override { std::filesystem::remove_all(dir_); }
  void Record(const std::string& text) { std::ofstream(log_ + ".exit") << text; }

  std::filesystem::path dir_;
  std::string log_;
};

TEST_F(RecordedExitCodeTest, TheCodeOfThatPidIsRead) {
  Record("{\"pid\":4242,\"code\":3}\n");
  EXPECT_EQ(RecordedExitCode(log_, 4242), 3);
  Record("{\"pid\":4242,\"code\":0}\n");
  EXPECT_EQ(RecordedExitCode(log_, 4242), 0);
}

TEST_F(RecordedExitCodeTest, AnotherIncarnationsOrAMalformedOrMissingRecordSaysNothing) {
  EXPECT_EQ(RecordedExitCode(log_, 4242), std::nullopt) << "no record";
  Record("{\"pid\":4241,\"code\":0}\n");
  EXPECT_EQ(RecordedExitCode(log_, 4242), std::nullopt) << "an earlier incarnation's";
  for (const char* bad : {"", "{\"pid\":4242", "{\"pid\":4242}", "{\"pid\":\"4242\",\"code\":1}",
                          "{\"pid\":4242,\"code\":1.5}", "[4242, 1]"}) {
    Record(bad);
    EXPECT_EQ(RecordedExitCode(log_, 4242), std::nullopt) << bad;
  }
}

}  // namespace
}  // namespace orrery::scheduler
