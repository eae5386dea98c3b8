// How every reader of process output (the local and Slurm backends, orrery log-relay) cuts it
// into lines.
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "scheduler/backend.h"

namespace orrery::scheduler {
namespace {

class LineSplitterTest : public ::testing::Test {
 protected:
  void Append(absl::string_view data, size_t max = std::string::npos) {
    splitter_.Append(data, max, [this](std::string line) { lines_.push_back(std::move(line)); });
  }
  void Finish() {
    splitter_.Finish([this](std::string line) { lines_.push_back(std::move(line)); });
  }

  LineSplitter splitter_;
  std::vector<std::string> lines_;
};

TEST_F(LineSplitterTest, LinesSpanningPiecesComeWholeInOrderAndTheRestAtTheEnd) {
  Append("one\ntw");
  EXPECT_EQ(lines_, (std::vector<std::string>{"one"}));
  Append("o\n\nthr");
  Append("ee");
  EXPECT_EQ(lines_, (std::vector<std::string>{"one", "two", ""}));
  Finish();
  EXPECT_EQ(lines_, (std::vector<std::string>{"one", "two", "", "three"}));
  Finish();  // nothing left
  EXPECT_EQ(lines_.size(), 4u);
}

TEST_F(LineSplitterTest, ALineStillWithoutItsNewlineIsSplitOnceItReachesTheLimit) {
  Append("abcdefg", 3);
  EXPECT_EQ(lines_, (std::vector<std::string>{"abc", "def"}));
  Append("h\n", 3);
  EXPECT_EQ(lines_, (std::vector<std::string>{"abc", "def", "gh"}));
  // A long line that arrives with its newline is passed on whole.
  Append("abcdefg\nxy", 3);
  EXPECT_EQ(lines_.back(), "abcdefg");
  Finish();
  EXPECT_EQ(lines_.back(), "xy");
}

TEST_F(LineSplitterTest, WithoutALimitLinesAreNeverSplit) {
  const std::string long_line(1 << 20, 'x');
  Append(long_line);
  EXPECT_TRUE(lines_.empty());
  Append("\n");
  ASSERT_EQ(lines_.size(), 1u);
  EXPECT_EQ(lines_[0], long_line);
}

}  // namespace
}  // namespace orrery::scheduler
