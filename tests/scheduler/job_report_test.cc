// ReportFromEventsFiles: a job's report read back from its learners' and evaluator's events
// files, as a scheduler restarted after a crash does for a job it re-attached to.
#include "scheduler/job_report.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace orrery::scheduler {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class ReportFromEventsTest : public ::testing::Test {
 protected:
  ReportFromEventsTest() {
    dir_ = fs::temp_directory_path() /
           absl::StrCat("orrery-events-", ::getpid(), "-",
                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    job_.name = "events";
    job_.learners = 2;
    job_.target_accuracy = 0.5;
  }
  ~ReportFromEventsTest() override { fs::remove_all(dir_); }

  void Append(const std::string& role, const std::string& line) {
    std::ofstream(EventsFilePath(dir_.string(), role), std::ios::app) << line << "\n";
  }

  static std::string Eval(double seconds, double accuracy, bool final) {
    return absl::StrCat(R"(ORRERY_EVAL {"seconds":)", seconds, R"(,"test_accuracy":)", accuracy,
                        R"(,"test_loss":0.5,"final":)", final ? "true" : "false",
                        R"(,"stats":{"updates_applied":40,"gradients_applied":80,"samples_applied":5120,)"
                        R"("staleness":{"mean":0.75,"max":3,"histogram":[20,40,15,5,0,0]}}})");
  }

  static std::string Done(double seconds) {
    return absl::StrCat(R"(ORRERY_LEARNER_DONE {"learner":0,"seconds":)", seconds,
                        R"(,"pushes":40,"push_bytes":1000,"pulls":41,"pull_bytes":2000})");
  }

  fs::path dir_;
  JobSpec job_;
};

// Each learner reports every shard restart it saw; a restart counts once, at its worst report.
TEST_F(ReportFromEventsTest, UpdatesLostCountEachShardRestartOnceAtItsWorstReport) {
  auto restart = [](int shard, int lost) {
    return absl::StrCat(R"(ORRERY_LEARNER_SHARD_RESTART {"learner":0,"shard":)", shard, R"(,"updates_lost":)", lost, "}");
  };
  Append("evaluator", Eval(5, 0.71, true));
  // Shard 0 restarted twice (learner 0 saw 3 then 5 updates lost, learner 1 saw 4 then 2), shard 1
  // once (7 and 6).
  Append("learner-0", restart(0, 3));
  Append("learner-0", restart(1, 7));
  Append("learner-0", restart(0, 5));
  Append("learner-0", Done(4.0));
  Append("learner-1", restart(0, 4));
  Append("learner-1", restart(1, 6));
  Append("learner-1", restart(0, 2));
  Append("learner-1", Done(4.5));
  absl::StatusOr<RunReport> report = ReportFromEventsFiles(job_, dir_.string(), 7.5);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->updates_lost, 4u + 5u + 7u);
}

TEST_F(ReportFromEventsTest, FinalEvaluationAndFinishedLearnersMakeTheReport) {
  Append("evaluator", Eval(2, 0.31, false));
  Append("evaluator", "glog noise that is not a tagged line");
  Append("evaluator", R"(ORRERY_EVAL {"seconds": 4, "test_accuracy": 0.6)");  // torn: skipped
  Append("evaluator", Eval(4, 0.62, false));
  Append("evaluator", Eval(5, 0.71, true));
  Append("learner-0", R"(ORRERY_LEARNER_JOINED {"learner":0})");
  Append("learner-0", Done(4.0));
  Append("learner-1", Done(4.5));

  absl::StatusOr<RunReport> report = ReportFromEventsFiles(job_, dir_.string(), 7.5);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->job, "events");
  EXPECT_DOUBLE_EQ(report->test_accuracy, 0.71);
  EXPECT_EQ(report->evals.size(), 3u);
  ASSERT_TRUE(report->time_to_target_seconds.has_value());
  EXPECT_DOUBLE_EQ(*report->time_to_target_seconds, 4);
  EXPECT_EQ(report->learners_finished, 2);
  EXPECT_EQ(report->learners_failed, 0);
  EXPECT_EQ(report->pushes, 80u);
  EXPECT_EQ(report->pull_bytes, 4000u);
  EXPECT_EQ(report->updates_applied, 40u);
  EXPECT_EQ(report->staleness_max, 3u);
  EXPECT_EQ(report->staleness_histogram.size(), 4u) << "trailing empty buckets dropped";
  EXPECT_DOUBLE_EQ(report->train_seconds, 4.5);
  EXPECT_DOUBLE_EQ(report->images_per_second, 5120 / 4.5);
  EXPECT_DOUBLE_EQ(report->wall_seconds, 7.5);
}

TEST_F(ReportFromEventsTest, ALearnerThatNeverSaidDoneCountsAsFailed) {
  Append("evaluator", Eval(5, 0.7, true));
  Append("learner-0", Done(4.0));
  Append("learner-1", R"(ORRERY_LEARNER {"learner":1,"step":3})");

  absl::StatusOr<RunReport> report = ReportFromEventsFiles(job_, dir_.string(), 6);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->learners_finished, 1);
  EXPECT_EQ(report->learners_failed, 1);
  ASSERT_EQ(report->learner_failures.size(), 1u);
  EXPECT_THAT(report->learner_failures[0], HasSubstr("learner-1"));
}

TEST_F(ReportFromEventsTest, NoFinalEvaluationIsAnErrorNamingTheFile) {
  Append("evaluator", Eval(2, 0.3, false));  // evaluations, but not the final one
  Append("learner-0", Done(4.0));
  absl::StatusOr<RunReport> report = ReportFromEventsFiles(job_, dir_.string(), 6);
  ASSERT_FALSE(report.ok());
  EXPECT_THAT(report.status().message(), HasSubstr("no final evaluation"));
  EXPECT_THAT(report.status().message(), HasSubstr("evaluator.events"));
}

TEST_F(ReportFromEventsTest, NoLearnerFinishedIsAnError) {
  Append("evaluator", Eval(5, 0.7, true));
  absl::StatusOr<RunReport> report = ReportFromEventsFiles(job_, dir_.string(), 6);
  ASSERT_FALSE(report.ok());
  EXPECT_THAT(report.status().message(), HasSubstr("no learner finished"));
}

TEST(EventsNotInLogTest, ReturnsTheEventsLinesAfterTheLastOneTheLogHas) {
  const std::vector<std::string> log = {
      "2026-12-01T03:49:20.070Z learner-1 out| ORRERY_LEARNER_JOINED {\"learner\":1}",
      "2026-12-01T03:49:20.100Z learner-1 err| I1201 a log line of glog",
      "2026-12-01T03:49:20.224Z learner-1 out| ORRERY_LEARNER {\"step\":1}",
  };
  const std::vector<std::string> events = {"ORRERY_LEARNER_JOINED {\"learner\":1}", "ORRERY_LEARNER {\"step\":1}",
                                           "ORRERY_LEARNER {\"step\":2}", "ORRERY_LEARNER_DONE {\"steps\":2}"};
  EXPECT_THAT(EventsNotInLog(log, events),
              ::testing::ElementsAre("ORRERY_LEARNER {\"step\":2}", "ORRERY_LEARNER_DONE {\"steps\":2}"));
  EXPECT_TRUE(EventsNotInLog(log, {events[0], events[1]}).empty()) << "the log has them all";
  EXPECT_EQ(EventsNotInLog({}, events), events) << "no log: every events line";
  // A line the log has only as part of another does not count.
  EXPECT_EQ(EventsNotInLog({"t learner-1 out| ORRERY_LEARNER {\"step\":1} trailing"}, {events[1]}).size(), 1u);
}

}  // namespace
}  // namespace orrery::scheduler
