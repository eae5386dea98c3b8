// Shard checkpoints: the file format's checks, a faithful round trip of the shard's state, refusal
// of foreign checkpoints without any change, and ShardServer's periodic, final and resumed use.
#include "server/checkpoint.h"

#include <filesystem>
#include <fstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "server/parameter_shard.h"
#include "server/shard_server.h"
#include "tests/server/shard_test_util.h"

namespace orrery::server {
namespace {

using ::testing::HasSubstr;
using testing::FakeLearners;
using testing::SmallConfig;
using testing::SmallLayout;

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::path(::testing::TempDir()) /
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  std::string Path(const std::string& name) const { return (dir_ / name).string(); }

  // A softsync:2 shard of 4 learners after some steps, with a half-collected group pending.
  static proto::ShardCheckpoint Trained(FakeLearners& f) {
    for (int i = 0; i < 4; ++i) f.Register(i);
    f.Init(1.0f);
    for (int step = 0; step < 3; ++step) {
      for (int l = 0; l < 4; ++l) {
        f.Pull(l, step);
        EXPECT_TRUE(f.Push(l, step, 0.1f * static_cast<float>(l + 1), f.version()).ok());
      }
    }
    f.Pull(0, 3);
    EXPECT_TRUE(f.Push(0, 3, 0.7f, f.version()).ok());  // one of a group of two: pending
    absl::StatusOr<proto::ShardCheckpoint> c = f.shard().Checkpoint();
    EXPECT_TRUE(c.ok()) << c.status();
    return *c;
  }

  std::filesystem::path dir_;
};

TEST_F(CheckpointTest, RoundTripRestoresTheWholeState) {
  FakeLearners a(SmallConfig("softsync:2", 4));
  const proto::ShardCheckpoint c = Trained(a);
  EXPECT_EQ(c.pending(), 1);
  ASSERT_TRUE(WriteCheckpointFile(Path("s.ckpt"), c).ok());
  absl::StatusOr<proto::ShardCheckpoint> read = ReadCheckpointFile(Path("s.ckpt"));
  ASSERT_TRUE(read.ok()) << read.status();

  FakeLearners b(SmallConfig("softsync:2", 4));
  ASSERT_TRUE(b.shard().Restore(*read).ok());
  ShardState before = a.shard().DebugState(), after = b.shard().DebugState();
  EXPECT_EQ(after.version, before.version);
  EXPECT_GT(after.version, 0u);
  EXPECT_EQ(after.weights, before.weights);
  EXPECT_EQ(after.accumulator, before.accumulator);
  EXPECT_EQ(after.pending, before.pending);
  EXPECT_EQ(after.pending_staleness, before.pending_staleness);
  EXPECT_EQ(after.staleness, before.staleness);
  EXPECT_EQ(after.gradients_applied, before.gradients_applied);
  EXPECT_EQ(after.pushes, before.pushes);
  ASSERT_EQ(after.learners.size(), before.learners.size());
  for (const auto& [id, l] : before.learners) {
    EXPECT_EQ(after.learners.at(id).clock, l.clock);
    EXPECT_EQ(after.learners.at(id).active, l.active);
    EXPECT_EQ(after.learners.at(id).last_pushed, l.last_pushed);
  }
  // Both go on identically: the pending gradient completes its group on both.
  b.Pull(1, 3);
  a.Pull(1, 3);
  ASSERT_TRUE(a.Push(1, 3, 0.2f, a.version()).ok());
  ASSERT_TRUE(b.Push(1, 3, 0.2f, b.version()).ok());
  EXPECT_EQ(a.shard().DebugState().weights, b.shard().DebugState().weights);
  EXPECT_EQ(a.version(), b.version());
  // A retried push of a step already pushed before the checkpoint is still recognised.
  EXPECT_EQ(b.Push(0, 3, 0.7f, b.version()).status().code(), absl::StatusCode::kAlreadyExists);
}

TEST_F(CheckpointTest, CorruptTruncatedAndForeignFilesAreRefusedNamingTheFile) {
  FakeLearners a(SmallConfig("softsync:2", 4));
  ASSERT_TRUE(WriteCheckpointFile(Path("good.ckpt"), Trained(a)).ok());
  std::string bytes;
  {
    std::ifstream in(Path("good.ckpt"), std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  auto write = [&](const std::string& name, const std::string& content) {
    std::ofstream(Path(name), std::ios::binary) << content;
    return Path(name);
  };
  std::string flipped = bytes;
  flipped[bytes.size() / 2] ^= 0x5a;
  struct Case {
    std::string path;
    std::string why;
  } cases[] = {
      {write("flipped.ckpt", flipped), "checksum mismatch"},
      {write("truncated.ckpt", bytes.substr(0, bytes.size() - 7)), "truncated"},
      {write("short.ckpt", bytes.substr(0, 5)), "truncated"},
      {write("empty.ckpt", ""), "truncated"},
      {write("foreign.ckpt", "PK\x03\x04 this is a zip file, not a checkpoint at all"), "bad magic"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<proto::ShardCheckpoint> r = ReadCheckpointFile(c.path);
    ASSERT_FALSE(r.ok()) << c.path;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << c.path;
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(c.path));
    EXPECT_THAT(std::string(r.status().message()), HasSubstr(c.why));
  }
  EXPECT_EQ(ReadCheckpointFile(Path("missing.ckpt")).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(CheckpointTest, MismatchedCheckpointIsRefusedAndChangesNothing) {
  FakeLearners a(SmallConfig("softsync:2", 4));
  const proto::ShardCheckpoint good = Trained(a);
  struct Case {
    const char* what;
    std::function<void(proto::ShardCheckpoint*)> spoil;
  } cases[] = {
      {"job", [](proto::ShardCheckpoint* c) { c->set_job_id("another-job"); }},
      {"shard", [](proto::ShardCheckpoint* c) { c->set_shard_index(1); }},
      {"protocol", [](proto::ShardCheckpoint* c) { c->set_protocol("async"); }},
      {"model", [](proto::ShardCheckpoint* c) { c->mutable_layout()->mutable_tensors(0)->set_element_count(11); }},
      {"weights", [](proto::ShardCheckpoint* c) { c->mutable_weights()->pop_back(); }},
      {"NaN", [](proto::ShardCheckpoint* c) {
         const float nan = std::numeric_limits<float>::quiet_NaN();
         std::memcpy(c->mutable_weights()->data(), &nan, sizeof nan);
       }},
      // States no shard writes (a hand-edited file): each would hand out a learner id twice,
      // average a gradient nobody pushed or lose one that was.
      {"next id", [](proto::ShardCheckpoint* c) { c->set_next_learner_id(2); }},
      {"ever joined", [](proto::ShardCheckpoint* c) { c->set_ever_joined(3); }},
      {"id range", [](proto::ShardCheckpoint* c) {
         c->mutable_learners(3)->set_id(SyncProtocol::kMaxLearnerId);
         c->set_next_learner_id(SyncProtocol::kMaxLearnerId + 1);
       }},
      {"pushed ahead of clock", [](proto::ShardCheckpoint* c) {
         c->mutable_learners(0)->set_last_pushed(c->learners(0).clock());
       }},
      {"pending without gradient", [](proto::ShardCheckpoint* c) { c->clear_accumulator(); }},
      {"gradient without pending", [](proto::ShardCheckpoint* c) {
         c->set_pending(0);
         c->clear_pending_staleness();
       }},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    proto::ShardCheckpoint spoiled = good;
    c.spoil(&spoiled);
    ShardConfig config = SmallConfig("softsync:2", 4);
    config.layout = SmallLayout();  // the job's model is known: a checkpoint of another is refused
    FakeLearners b(config);
    const ShardState before = b.shard().DebugState();
    absl::Status st = b.shard().Restore(spoiled);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
    EXPECT_TRUE(b.shard().DebugState() == before);
  }
  // Nor into a shard that already trains.
  EXPECT_EQ(a.shard().Restore(good).code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(CheckpointTest, HardsyncCheckpointWithMorePendingThanPushersIsRefused) {
  FakeLearners a(SmallConfig("hardsync", 3));
  for (int i = 0; i < 3; ++i) a.Register(i);
  a.Init(1.0f);
  for (int l = 0; l < 2; ++l) {
    a.Pull(l, 0);
    ASSERT_TRUE(a.Push(l, 0, 0.5f, a.version()).ok());
  }
  absl::StatusOr<proto::ShardCheckpoint> good = a.shard().Checkpoint();
  ASSERT_TRUE(good.ok()) << good.status();
  ASSERT_EQ(good->pending(), 2);  // step 0 waits for learner 2
  {
    FakeLearners b(SmallConfig("hardsync", 3));
    EXPECT_TRUE(b.shard().Restore(*good).ok());
  }
  proto::ShardCheckpoint three = *good;
  three.set_pending(3);
  three.add_pending_staleness(0);
  proto::ShardCheckpoint ahead = *good;
  ahead.mutable_learners(0)->set_last_pushed(1);
  ahead.mutable_learners(0)->set_clock(2);
  for (const proto::ShardCheckpoint& spoiled : {three, ahead}) {
    FakeLearners b(SmallConfig("hardsync", 3));
    const ShardState before = b.shard().DebugState();
    absl::Status st = b.shard().Restore(spoiled);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
    EXPECT_THAT(st.message(), HasSubstr("hardsync"));
    EXPECT_TRUE(b.shard().DebugState() == before);
  }
}

TEST_F(CheckpointTest, ShardServerCheckpointsAtAStopAndResumesFromIt) {
  const std::string layout = Path("layout.txt");
  std::ofstream(layout) << "tensors { name: \"w\" element_count: 300 }\nchunk_size: 64\nnum_shards: 1\n";
  const std::string weights = Path("w.f32");
  {
    std::vector<float> init(300, 0.25f);
    std::ofstream(weights, std::ios::binary)
        .write(reinterpret_cast<const char*>(init.data()), init.size() * sizeof(float));
  }
  ServerOptions o;
  o.job_id = "ckpt-job";
  o.layout_path = layout;
  o.initial_weights_path = weights;
  o.checkpoint_dir = Path("ckpt");
  o.checkpoint_every_seconds = 3600;
  {
    auto server = ShardServer::Start(o);
    ASSERT_TRUE(server.ok()) << server.status();
    EXPECT_FALSE((*server)->restored().has_value());
    (*server)->Shutdown();
  }
  ASSERT_TRUE(std::filesystem::exists(CheckpointPath(o.checkpoint_dir, 0)));
  o.resume = true;
  o.initial_weights_path.clear();  // the checkpoint, not the file, must provide the weights
  o.layout_path.clear();
  {
    auto server = ShardServer::Start(o);
    ASSERT_TRUE(server.ok()) << server.status();
    ASSERT_TRUE((*server)->restored().has_value());
    EXPECT_EQ((*server)->restored()->version, 0u);
    EXPECT_EQ((*server)->shard().DebugState().weights, std::vector<float>(300, 0.25f));
  }
  // Another job's shard refuses the file and does not start.
  o.job_id = "other-job";
  auto refused = ShardServer::Start(o);
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr(CheckpointPath(o.checkpoint_dir, 0)));
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("other-job"));
}

TEST_F(CheckpointTest, ASecondShardOnTheSameCheckpointIsRefusedWhileTheFirstRuns) {
  const std::string layout = Path("layout.txt");
  std::ofstream(layout) << "tensors { name: \"w\" element_count: 300 }\nchunk_size: 64\nnum_shards: 1\n";
  ServerOptions o;
  o.job_id = "job-a";
  o.layout_path = layout;
  o.checkpoint_dir = Path("ckpt");
  auto first = ShardServer::Start(o);
  ASSERT_TRUE(first.ok()) << first.status();
  o.job_id = "job-b";  // another job given the same checkpoint dir
  auto second = ShardServer::Start(o);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(second.status().message()),
              HasSubstr(absl::StrCat("checkpoint ", CheckpointPath(o.checkpoint_dir, 0), " is in use by another shard")));
  first->reset();
  EXPECT_TRUE(ShardServer::Start(o).ok()) << "free again once the first shard is gone";
}

}  // namespace
}  // namespace orrery::server
