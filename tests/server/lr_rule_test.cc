#include "server/lr_rule.h"

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

}  // namespace
}  // namespace orrery::server
