#include "server/lr_rule.h"

#include <limits>
#include <vector>

#include <gtest/gtest.h>

#include "server/staleness_stats.h"

namespace orrery::server {
namespace {

TEST(LrRuleTest, NoneAppliesTheBaseRateWhateverTheStaleness) {
  auto rule = MakeLearningRateRule("none", 0.1f);
  ASSERT_TRUE(rule.ok());
  for (uint64_t t : {0, 1, 5, 1000}) EXPECT_FLOAT_EQ((*rule)->Rate(t), 0.1f);
}

TEST(LrRuleTest, InverseDividesByMaxOfOneAndStaleness) {
  auto rule = MakeLearningRateRule("inverse", 0.8f);
  ASSERT_TRUE(rule.ok());
  EXPECT_FLOAT_EQ((*rule)->Rate(0), 0.8f);
  EXPECT_FLOAT_EQ((*rule)->Rate(1), 0.8f);
  EXPECT_FLOAT_EQ((*rule)->Rate(2), 0.4f);
  EXPECT_FLOAT_EQ((*rule)->Rate(4), 0.2f);
  EXPECT_FLOAT_EQ((*rule)->Rate(16), 0.05f);
}

TEST(LrRuleTest, RejectsUnknownRulesAndBadBases) {
  EXPECT_EQ(MakeLearningRateRule("cosine", 0.1f).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(MakeLearningRateRule("none", 0.0f).ok());
  EXPECT_FALSE(MakeLearningRateRule("none", -1.0f).ok());
}

TEST(StalenessStatsTest, RecordsHistogramMeanAndMax) {
  StalenessStats s;
  for (uint64_t t : {0, 1, 1, 2, 1000}) s.Record(t);
  EXPECT_EQ(s.count(), 5u);
  EXPECT_EQ(s.max(), 1000u);
  EXPECT_DOUBLE_EQ(s.mean(), 1004.0 / 5);
  EXPECT_EQ(s.histogram()[0], 1u);
  EXPECT_EQ(s.histogram()[1], 2u);
  EXPECT_EQ(s.histogram()[2], 1u);
  EXPECT_EQ(s.histogram()[StalenessStats::kBuckets - 1], 1u);
}

TEST(StalenessStatsTest, RestoreTakesWhatRecordLeavesAndRefusesPartsThatDoNotFit) {
  StalenessStats s;
  for (uint64_t t : {0, 1, 1, 2, 1000}) s.Record(t);
  StalenessStats r;
  ASSERT_TRUE(r.Restore(s.histogram(), s.count(), s.sum(), s.max()));
  EXPECT_TRUE(r == s);
  ASSERT_TRUE(r.Restore(StalenessStats().histogram(), 0, 0, 0));  // nothing recorded yet

  StalenessStats t;
  t.Record(3);
  t.Record(5);
  const StalenessStats unchanged = t;
  std::vector<uint64_t> h = s.histogram();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  EXPECT_FALSE(t.Restore(std::vector<uint64_t>(3, 0), 0, 0, 0));      // size
  EXPECT_FALSE(t.Restore(h, s.count() + 1, s.sum(), s.max()));       // count
  EXPECT_FALSE(t.Restore(h, s.count(), nan, s.max()));               // sum
  EXPECT_FALSE(t.Restore(h, s.count(), inf, s.max()));
  EXPECT_FALSE(t.Restore(h, s.count(), -1, s.max()));
  EXPECT_FALSE(t.Restore(h, s.count(), 1e9, s.max()));               // above max * count
  EXPECT_FALSE(t.Restore(h, s.count(), s.sum(), 63));                // max below the last bucket
  h[StalenessStats::kBuckets - 1] = 0;
  h[2] = 2;
  EXPECT_FALSE(t.Restore(h, s.count(), 8, 3));                       // max above the highest bucket
  EXPECT_FALSE(t.Restore(StalenessStats().histogram(), 0, 0, 1));
  h[0] = UINT64_MAX;
  EXPECT_FALSE(t.Restore(h, 3, 8, 2));                                // total overflows
  EXPECT_TRUE(t == unchanged);
}

}  // namespace
}  // namespace orrery::server
