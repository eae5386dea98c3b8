#include "scheduler/job_spec.h"

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
using ::testing::StartsWith;

class JobSpecTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) /
           absl::StrCat("job_spec_test_", ::getpid(), "_",
                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "models");
    Write(dir_ / "models" / "mlp.yaml", "name: mlp\n");
  }
  void TearDown() override { fs::remove_all(dir_); }

  static void Write(const fs::path& path, const std::string& text) {
    std::ofstream out(path);
    out << text;
  }

  absl::StatusOr<JobSpec> Parse(const std::string& extra) {
    return ParseJobSpec(absl::StrCat("name: demo\nmodel: models/mlp.yaml\n", extra), dir_.string());
  }

  // The error message of parsing the minimal spec plus `extra`; "" if it parsed.
  std::string Error(const std::string& extra) {
    absl::StatusOr<JobSpec> spec = Parse(extra);
    if (spec.ok()) return "";
    EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument) << spec.status();
    return std::string(spec.status().message());
  }

  fs::path dir_;
};

TEST_F(JobSpecTest, ParsesEveryKey) {
  absl::StatusOr<JobSpec> spec = Parse(R"(
data: /tmp/fmnist
servers: 2
learners: 4
protocol: softsync:4
lr: {base: 0.1, staleness: inverse, momentum: 0.5, decay_epochs: [1.5, 2], decay_factor: 0.2}
batch: 32
epochs: 2.5
seed: 7
target_accuracy: 0.89
slow_learners:
  - {learner: 3, factor: 3}
limit_train: 1000
eval_every_seconds: 5
backend: slurm
restart: {max_restarts: 3, backoff_seconds: 0.5, max_backoff_seconds: 4}
checkpoint: {dir: ckpt, every_seconds: 30}
precision: {wire: fixed16, weights: fp32, compute: fixed16, fl: 14}
bind: cores
)");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->name, "demo");
  EXPECT_EQ(spec->model_path, (dir_ / "models" / "mlp.yaml").string());
  EXPECT_EQ(spec->data_dir, "/tmp/fmnist");
  EXPECT_EQ(spec->servers, 2);
  EXPECT_EQ(spec->learners, 4);
  EXPECT_EQ(spec->protocol.kind, ProtocolKind::kSoftSync);
  EXPECT_EQ(spec->protocol.softsync_n, 4);
  EXPECT_DOUBLE_EQ(spec->lr.base, 0.1);
  EXPECT_EQ(spec->lr.staleness, LrStaleness::kInverse);
  EXPECT_DOUBLE_EQ(spec->lr.momentum, 0.5);
  EXPECT_EQ(spec->lr.decay_epochs, (std::vector<double>{1.5, 2}));
  EXPECT_DOUBLE_EQ(spec->lr.decay_factor, 0.2);
  EXPECT_EQ(spec->batch, 32);
  EXPECT_DOUBLE_EQ(spec->epochs, 2.5);
  EXPECT_EQ(spec->seed, 7u);
  EXPECT_DOUBLE_EQ(spec->target_accuracy.value(), 0.89);
  ASSERT_EQ(spec->slow_learners.size(), 1u);
  EXPECT_EQ(spec->slow_learners[0].learner, 3);
  EXPECT_DOUBLE_EQ(spec->slow_learners[0].factor, 3.0);
  EXPECT_EQ(spec->limit_train.value(), 1000);
  EXPECT_EQ(spec->eval_every.value(), absl::Seconds(5));
  EXPECT_EQ(spec->backend, BackendKind::kSlurm);
  EXPECT_EQ(spec->restart.max_restarts, 3);
  EXPECT_EQ(spec->restart.backoff, absl::Milliseconds(500));
  EXPECT_EQ(spec->restart.max_backoff, absl::Seconds(4));
  ASSERT_TRUE(spec->checkpoint.has_value());
  EXPECT_EQ(spec->checkpoint->dir, (dir_ / "ckpt").string());
  EXPECT_EQ(spec->checkpoint->every, absl::Seconds(30));
  EXPECT_EQ(spec->precision.wire, NumberFormat::kFixed16);
  EXPECT_EQ(spec->precision.weights, NumberFormat::kFp32);
  EXPECT_EQ(spec->precision.compute, NumberFormat::kFixed16);
  EXPECT_EQ(spec->precision.fl, 14);
  EXPECT_EQ(spec->bind, Binding::kCores);
}

TEST_F(JobSpecTest, OptionalKeysTakeDefaults) {
  absl::StatusOr<JobSpec> spec = Parse("");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->data_dir, kDefaultDataDir);
  EXPECT_EQ(spec->servers, 1);
  EXPECT_EQ(spec->learners, 1);
  EXPECT_EQ(spec->protocol.kind, ProtocolKind::kHardSync);
  EXPECT_EQ(spec->lr.staleness, LrStaleness::kNone);
  EXPECT_EQ(spec->backend, BackendKind::kLocal);
  EXPECT_EQ(spec->restart.max_restarts, 0);
  EXPECT_FALSE(spec->target_accuracy.has_value());
  EXPECT_FALSE(spec->limit_train.has_value());
  EXPECT_FALSE(spec->eval_every.has_value());
  EXPECT_FALSE(spec->checkpoint.has_value());
  EXPECT_TRUE(spec->slow_learners.empty());
  EXPECT_EQ(spec->bind, Binding::kNone);
}

TEST_F(JobSpecTest, StalenessTypoIsNamedWithTheKey) {
  EXPECT_EQ(Error("lr: {staleness: inversee}"), "lr.staleness: expected none or inverse, got 'inversee'");
}

TEST_F(JobSpecTest, UnknownKeysAreRejectedWithTheirPath) {
  EXPECT_THAT(Error("epoch: 3"), StartsWith("epoch: unknown key (expected one of: name, model,"));
  EXPECT_THAT(Error("lr: {rate: 0.1}"), StartsWith("lr.rate: unknown key (expected one of: base, staleness, momentum, decay_epochs, decay_factor)"));
  EXPECT_THAT(Error("slow_learners: [{learner: 0, factor: 2, speed: 1}]"), StartsWith("slow_learners[0].speed: unknown key"));
  EXPECT_THAT(Error("checkpoint: {dir: c, every_seconds: 1, keep: 3}"), StartsWith("checkpoint.keep: unknown key"));
}

TEST_F(JobSpecTest, DuplicateKeysAreRejected) { EXPECT_EQ(Error("servers: 1\nservers: 2"), "servers: duplicate key"); }

TEST_F(JobSpecTest, BadValuesAreRejectedWithTheKeyNamed) {
  EXPECT_EQ(Error("servers: 0"), "servers: expected an integer in [1, 1024], got '0'");
  EXPECT_EQ(Error("servers: 100000"), "servers: expected an integer in [1, 1024], got '100000'");
  EXPECT_EQ(Error("learners: two"), "learners: expected an integer in [1, 65536], got 'two'");
  EXPECT_EQ(Error("learners: 99999999999"), "learners: expected an integer in [1, 65536], got '99999999999'");
  EXPECT_EQ(Error("batch: 1.5"), "batch: expected an integer in [1, 65536], got '1.5'");
  EXPECT_EQ(Error("batch: 100000"), "batch: expected an integer in [1, 65536], got '100000'");
  EXPECT_EQ(Error("batch: [1, 2]"), "batch: expected a single value, got a list or mapping");
  EXPECT_EQ(Error("batch:"), "batch: missing value");
  EXPECT_EQ(Error("epochs: 0"), "epochs: expected a number in (0, 1000], got '0'");
  EXPECT_EQ(Error("epochs: .nan"), "epochs: expected a number in (0, 1000], got '.nan'");
  EXPECT_EQ(Error("epochs: 1e9"), "epochs: expected a number in (0, 1000], got '1e9'");
  EXPECT_EQ(Error("slow_learners: [{learner: 0, factor: 5000}]"),
            "slow_learners[0].factor: expected a factor in [1, 1000], got '5000'");
  // A value echoed in an error stays on one line and is cut when long.
  EXPECT_EQ(ParseJobSpec("name: \"a\\nb\"\nmodel: models/mlp.yaml\n", dir_.string()).status().message(),
            "name: expected letters, digits, '.', '_' or '-' starting with a letter or digit, got 'a\\nb'");
  EXPECT_EQ(Error(absl::StrCat("batch: ", std::string(100, '9'))),
            absl::StrCat("batch: expected an integer in [1, 65536], got '", std::string(60, '9'),
                         "...' (100 characters)"));
  EXPECT_EQ(Error("seed: -1"), "seed: expected an integer in [0, 2^64), got '-1'");
  EXPECT_EQ(Error("lr: {base: 0}"), "lr.base: expected a number > 0, got '0'");
  EXPECT_EQ(Error("lr: {momentum: 1}"), "lr.momentum: expected a number in [0, 1), got '1'");
  EXPECT_EQ(Error("lr: 0.1"), "lr: expected a mapping of keys");
  EXPECT_EQ(Error("lr: {decay_factor: 0}"), "lr.decay_factor: expected a number in (0, 1], got '0'");
  EXPECT_EQ(Error("lr: {decay_epochs: 3}"),
            "lr.decay_epochs: expected a list of epochs, for example [5, 7]");
  EXPECT_EQ(Error("lr: {decay_epochs: [3, 2]}"), "lr.decay_epochs[1]: epochs must ascend; 2 follows 3");
  EXPECT_EQ(Error("lr: {decay_epochs: [0]}"), "lr.decay_epochs[0]: expected an epoch > 0, got '0'");
  EXPECT_EQ(Error("target_accuracy: 89"), "target_accuracy: expected a fraction in (0, 1], got '89'");
  EXPECT_EQ(Error("limit_train: 0"), "limit_train: expected an integer >= 1, got '0'");
  EXPECT_EQ(Error("eval_every_seconds: -2"), "eval_every_seconds: expected a number of seconds > 0, got '-2'");
  EXPECT_EQ(Error("backend: yarn"), "backend: expected one of local, mpi, slurm, kubernetes, got 'yarn'");
  EXPECT_EQ(Error("bind: core"), "bind: expected none or cores, got 'core'");
  EXPECT_EQ(Error("precision: {wire: fp16}"), "precision.wire: expected fp32 or fixed16, got 'fp16'");
  EXPECT_EQ(Error("precision: {weights: float}"), "precision.weights: expected fp32 or fixed16, got 'float'");
  EXPECT_EQ(Error("precision: {fl: 16}"), "precision.fl: expected an integer in [0, 15], got '16'");
  EXPECT_EQ(Error("precision: {fl: -1}"), "precision.fl: expected an integer in [0, 15], got '-1'");
  EXPECT_EQ(Error("precision: {fl: 12.5}"), "precision.fl: expected an integer in [0, 15], got '12.5'");
  EXPECT_EQ(Error("precision: {il: 4}"),
            "precision.il: unknown key (expected one of: wire, weights, compute, fl)");
  EXPECT_EQ(Error("restart: {max_restarts: -1}"), "restart.max_restarts: expected an integer >= 0, got '-1'");
  EXPECT_EQ(Error("restart: {backoff_seconds: 10, max_backoff_seconds: 1}"),
            "restart.max_backoff_seconds: must be >= restart.backoff_seconds");
  EXPECT_EQ(Error("checkpoint: {dir: c}"), "checkpoint.every_seconds: missing");
  EXPECT_EQ(Error("checkpoint: {every_seconds: 5}"), "checkpoint.dir: missing");
}

TEST_F(JobSpecTest, ProtocolForms) {
  struct Case {
    std::string text;
    ProtocolKind kind;
    int n;
    int s;
  };
  for (const Case& c : {Case{"hardsync", ProtocolKind::kHardSync, 0, 0}, Case{"async", ProtocolKind::kAsync, 0, 0},
                        Case{"softsync:1", ProtocolKind::kSoftSync, 1, 0},
                        Case{"softsync:16", ProtocolKind::kSoftSync, 16, 0}, Case{"ssp:0", ProtocolKind::kSsp, 0, 0},
                        Case{"ssp:3", ProtocolKind::kSsp, 0, 3}}) {
    absl::StatusOr<Protocol> p = ParseProtocol(c.text);
    ASSERT_TRUE(p.ok()) << c.text << ": " << p.status();
    EXPECT_EQ(p->kind, c.kind) << c.text;
    EXPECT_EQ(p->softsync_n, c.n) << c.text;
    EXPECT_EQ(p->ssp_staleness, c.s) << c.text;
    EXPECT_EQ(ProtocolToString(*p), c.text);
  }
  for (const std::string bad : {"softsync", "softsync:0", "softsync:-1", "softsync:x", "ssp:-1", "ssp:", "ssp",
                                "Async", "hardsync:1", ""}) {
    EXPECT_FALSE(ParseProtocol(bad).ok()) << bad;
  }
  EXPECT_EQ(Error("protocol: softsync:0"),
            "protocol: expected hardsync, softsync:n (n >= 1), async or ssp:s (s >= 0), got 'softsync:0'");
}

TEST_F(JobSpecTest, SlowLearnersAreCheckedAgainstLearners) {
  EXPECT_EQ(Error("learners: 4\nslow_learners: [{learner: 4, factor: 3}]"),
            "slow_learners[0].learner: learner 4 does not exist (learners: 4, indices 0..3)");
  EXPECT_EQ(Error("learners: 4\nslow_learners: [{learner: 1, factor: 2}, {learner: 1, factor: 3}]"),
            "slow_learners[1].learner: learner 1 listed twice");
  EXPECT_EQ(Error("slow_learners: [{learner: 0, factor: 0.5}]"),
            "slow_learners[0].factor: expected a factor in [1, 1000], got '0.5'");
  EXPECT_EQ(Error("slow_learners: [{factor: 2}]"), "slow_learners[0].learner: missing");
  EXPECT_EQ(Error("slow_learners: {learner: 0}"), "slow_learners: expected a list of {learner, factor}");
}

TEST_F(JobSpecTest, LimitTrainMustGiveEveryLearnerData) {
  EXPECT_EQ(Error("learners: 8\nlimit_train: 4"),
            "limit_train: must be >= learners (8) so that every learner gets data, got 4");
}

TEST_F(JobSpecTest, NameAndModelAreRequiredAndChecked) {
  EXPECT_EQ(ParseJobSpec("model: models/mlp.yaml\n", dir_.string()).status().message(),
            "name: missing (every job needs a name)");
  EXPECT_EQ(ParseJobSpec("name: x\n", dir_.string()).status().message(), "model: missing (path to a model spec YAML)");
  EXPECT_THAT(std::string(ParseJobSpec("name: 'has space'\nmodel: models/mlp.yaml\n", dir_.string()).status().message()),
              StartsWith("name: expected letters, digits"));
  absl::StatusOr<JobSpec> missing = ParseJobSpec("name: x\nmodel: nope.yaml\n", dir_.string());
  EXPECT_THAT(std::string(missing.status().message()),
              StartsWith(absl::StrCat("model: file 'nope.yaml' not found (looked for ", (dir_ / "nope.yaml").string())));
}

TEST_F(JobSpecTest, ModelFallsBackToTheCurrentDirectory) {
  fs::path other = dir_ / "elsewhere";
  fs::create_directories(other);
  fs::path old_cwd = fs::current_path();
  fs::current_path(dir_);
  absl::StatusOr<JobSpec> spec = ParseJobSpec("name: x\nmodel: models/mlp.yaml\n", other.string());
  fs::current_path(old_cwd);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->model_path, (dir_ / "models" / "mlp.yaml").string());
}

TEST_F(JobSpecTest, MalformedYamlIsAnError) {
  EXPECT_THAT(Error("lr: {base: 0.1"), StartsWith("YAML syntax error at line "));
  EXPECT_EQ(ParseJobSpec("- a\n- b\n", dir_.string()).status().message(), "a job spec must be a YAML mapping of keys");
  EXPECT_EQ(ParseJobSpec("", dir_.string()).status().message(), "empty job spec");
}

TEST_F(JobSpecTest, TheWrongFileIsRefusedSayingWhy) {
  EXPECT_EQ(ReadJobSpecFile(dir_.string()).status().message(), dir_.string() + ": is a directory, not a job spec");
  EXPECT_EQ(ReadJobSpecFile((dir_ / "none.yaml").string()).status().code(), absl::StatusCode::kNotFound);
  const fs::path big = dir_ / "big.yaml";
  Write(big, "name: big\nmodel: models/mlp.yaml\n# " + std::string(kMaxJobSpecBytes, 'x') + "\n");
  EXPECT_THAT(std::string(ReadJobSpecFile(big.string()).status().message()), HasSubstr("longer than a job spec may be"));
  EXPECT_THAT(std::string(LoadJobSpec(big.string()).status().message()), HasSubstr("longer than a job spec may be"));
  // Not UTF-8: a byte that starts no sequence, an overlong '/', a surrogate, a cut sequence.
  for (const std::string bad : {"name: a\xff", "name: a\xc0\xaf" "b", "name: \xed\xa0\x80", "name: caf\xc3"}) {
    const fs::path file = dir_ / "bad.yaml";
    Write(file, bad);
    EXPECT_THAT(std::string(ReadJobSpecFile(file.string()).status().message()), HasSubstr("not UTF-8 text")) << bad;
    EXPECT_THAT(std::string(ParseJobSpec(bad, dir_.string()).status().message()), HasSubstr("not UTF-8 text")) << bad;
  }
  EXPECT_THAT(std::string(ParseJobSpec(std::string(kMaxJobSpecBytes + 1, ' '), dir_.string()).status().message()),
              HasSubstr("more than a job spec may be"));
  // Multi-byte UTF-8 (in a comment, and up to four bytes) is text like any other.
  const fs::path ok = dir_ / "ok.yaml";
  Write(ok, "# caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\nname: demo\nmodel: models/mlp.yaml\n");
  absl::StatusOr<JobSpec> spec = LoadJobSpec(ok.string());
  EXPECT_TRUE(spec.ok()) << spec.status();
}

TEST_F(JobSpecTest, LoadResolvesAgainstTheFileAndPrefixesErrors) {
  fs::path job = dir_ / "job.yaml";
  Write(job, "name: demo\nmodel: models/mlp.yaml\nservers: 2\n");
  absl::StatusOr<JobSpec> spec = LoadJobSpec(job.string());
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->servers, 2);
  EXPECT_EQ(spec->model_path, (dir_ / "models" / "mlp.yaml").string());

  Write(job, "name: demo\nmodel: models/mlp.yaml\nservers: many\n");
  EXPECT_EQ(LoadJobSpec(job.string()).status().message(),
            absl::StrCat(job.string(), ": servers: expected an integer in [1, 1024], got 'many'"));
  EXPECT_EQ(LoadJobSpec((dir_ / "none.yaml").string()).status().code(), absl::StatusCode::kNotFound);
}

TEST(RestartPolicyTest, BacksOffExponentiallyUpToTheCap) {
  RestartPolicy policy{/*max_restarts=*/4, absl::Seconds(1), absl::Seconds(3)};
  EXPECT_EQ(NextRestartDelay(policy, 0, true, false), absl::Seconds(1));
  EXPECT_EQ(NextRestartDelay(policy, 1, true, false), absl::Seconds(2));
  EXPECT_EQ(NextRestartDelay(policy, 2, true, false), absl::Seconds(3));
  EXPECT_EQ(NextRestartDelay(policy, 3, true, false), absl::Seconds(3));
  EXPECT_EQ(NextRestartDelay(policy, 4, true, false), std::nullopt);
  EXPECT_EQ(NextRestartDelay(policy, 0, /*failed=*/false, false), std::nullopt);
  EXPECT_EQ(NextRestartDelay(policy, 0, true, /*stop_requested=*/true), std::nullopt);
}

}  // namespace
}  // namespace orrery::scheduler

namespace orrery::scheduler {
namespace {

TEST(JobSpecRegressionTest, MalformedTextWithEndlessDocumentsIsRefused) {
  std::ifstream in(std::string(ORRERY_SOURCE_DIR) + "/fuzz/regressions/yaml_endless_documents.yaml");
  ASSERT_TRUE(in) << "missing regression input";
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  absl::StatusOr<JobSpec> spec = ParseJobSpec(text, ORRERY_SOURCE_DIR);
  ASSERT_FALSE(spec.ok());
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(JobSpecRegressionTest, SeveralDocumentsAreRefused) {
  absl::StatusOr<JobSpec> spec = ParseJobSpec("name: a\n---\nname: b\n", ORRERY_SOURCE_DIR);
  ASSERT_FALSE(spec.ok());
  EXPECT_NE(spec.status().message().find("one YAML document"), std::string_view::npos) << spec.status();
}

}  // namespace
}  // namespace orrery::scheduler
