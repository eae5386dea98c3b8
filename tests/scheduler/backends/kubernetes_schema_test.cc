// Every Kubernetes object Orrery renders — for each example job, through `orrery render-k8s`, as
// YAML and as JSON — and every manifest under deploy/kubernetes validates against the Kubernetes
// schemas (the npm package kubernetes-models, installed by the fixture
// backends_k8s_validator_setup). A broken manifest must be caught, so the check is real.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "backend_test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace orrery::scheduler {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

struct Ran {
  int code = -1;
  std::string output;
};

Ran Shell(const std::string& command) {
  Ran ran;
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return ran;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof(buf), pipe)) ran.output.append(buf, n);
  const int status = ::pclose(pipe);
  ran.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return ran;
}

std::string Validate(const std::string& path) {
  return absl::StrCat("node ", ORRERY_SOURCE_DIR, "/tests/scheduler/backends/validate_k8s.mjs ",
                      ORRERY_K8S_VALIDATOR_DIR, " ", path);
}

class KubernetesSchemaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(fs::exists(fs::path(ORRERY_K8S_VALIDATOR_DIR) / "node_modules/kubernetes-models/package.json"))
        << "kubernetes-models is not installed in " << ORRERY_K8S_VALIDATOR_DIR
        << ": run scripts/setup-k8s-validator.sh " << ORRERY_K8S_VALIDATOR_DIR;
    dir_ = testing::FreshDir("k8s_schema");
  }
  std::string dir_;
};

TEST_F(KubernetesSchemaTest, EveryRenderedObjectOfEveryExampleJobValidates) {
  std::vector<std::string> jobs;
  for (const auto& e : fs::directory_iterator(fs::path(ORRERY_SOURCE_DIR) / "examples/jobs")) {
    if (e.path().extension() == ".yaml") jobs.push_back(e.path().string());
  }
  testing::TinyJob(dir_, "tiny");
  jobs.push_back(dir_ + "/job.yaml");
  ASSERT_GE(jobs.size(), 2u);
  for (const std::string& job : jobs) {
    for (const char* format : {"", " --json"}) {
      const std::string out = absl::StrCat(dir_, "/", fs::path(job).stem().string(), *format ? "-json" : "-yaml");
      Ran render = Shell(absl::StrCat(ORRERY_BINARY, " render-k8s ", job, " --out ", out, " --namespace training",
                                      " --image registry.example/orrery:1.0", format));
      ASSERT_EQ(render.code, 0) << render.output;
      Ran check = Shell(Validate(out));
      EXPECT_EQ(check.code, 0) << job << format << ":\n" << check.output;
      EXPECT_THAT(check.output, HasSubstr("7 object(s), 0 invalid")) << check.output;
    }
  }
}

TEST_F(KubernetesSchemaTest, TheValidatorCatchesABrokenManifest) {
  testing::TinyJob(dir_, "tiny");
  Ran render = Shell(absl::StrCat(ORRERY_BINARY, " render-k8s ", dir_, "/job.yaml --out ", dir_, "/out"));
  ASSERT_EQ(render.code, 0) << render.output;
  std::string sts;
  for (const auto& e : fs::directory_iterator(dir_ + "/out")) {
    if (e.path().filename().string().find("statefulset") != std::string::npos) sts = e.path().string();
  }
  ASSERT_FALSE(sts.empty());
  std::ifstream in(sts);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  text.replace(text.find("replicas: 1"), 11, "replicas: one");
  std::ofstream(dir_ + "/broken.yaml") << text;
  Ran check = Shell(Validate(dir_ + "/broken.yaml"));
  EXPECT_EQ(check.code, 1) << check.output;
  EXPECT_THAT(check.output, HasSubstr("replicas must be integer"));
}

TEST_F(KubernetesSchemaTest, TheDeployKustomizationsValidate) {
  const fs::path deploy = fs::path(ORRERY_SOURCE_DIR) / "deploy/kubernetes";
  Ran base = Shell(Validate((deploy / "base").string()));
  EXPECT_EQ(base.code, 0) << base.output;
  EXPECT_THAT(base.output, HasSubstr("6 object(s), 0 invalid"));  // the Secret comes from the overlay
  // The overlay as kustomize builds it, where kubectl (which embeds kustomize) is installed.
  if (Shell("command -v kubectl").code != 0) {
    GTEST_SKIP() << "kubectl not installed: the overlay's kustomize build is not checked (the base is)";
  }
  Ran built = Shell(absl::StrCat("kubectl kustomize ", (deploy / "overlays/example").string(), " > ", dir_,
                                 "/overlay.yaml"));
  ASSERT_EQ(built.code, 0) << built.output;
  Ran check = Shell(Validate(dir_ + "/overlay.yaml"));
  EXPECT_EQ(check.code, 0) << check.output;
  EXPECT_THAT(check.output, HasSubstr("8 object(s), 0 invalid"));  // + its Namespace and Secret
}

}  // namespace
}  // namespace orrery::scheduler
