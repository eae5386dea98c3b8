// RenderKubernetes: the objects, how shards and learners learn their index, where the token
// lives, the network policy, names, and YAML that reads back as the objects.
#include "scheduler/backends/kubernetes_manifests.h"

#include <filesystem>
#include <fstream>

#include "backend_test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "yaml-cpp/yaml.h"

namespace orrery::scheduler {
namespace {

using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using Json = nlohmann::ordered_json;

class KubernetesManifestsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::FreshDir("k8s");
    job_ = testing::TinyJob(dir_, "Tiny_Job.v2");
    job_.servers = 2;
    job_.learners = 3;
    options_.token = "s3cret-token";
  }
  std::vector<KubernetesObject> Render() {
    absl::StatusOr<std::vector<KubernetesObject>> objects = RenderKubernetes(job_, options_);
    EXPECT_TRUE(objects.ok()) << objects.status();
    return objects.value_or(std::vector<KubernetesObject>{});
  }
  // A copy: callers pass temporaries.
  static Json Find(const std::vector<KubernetesObject>& objects, const std::string& kind, const std::string& suffix) {
    for (const KubernetesObject& o : objects) {
      if (o.kind == kind && o.name.size() >= suffix.size() &&
          o.name.compare(o.name.size() - suffix.size(), suffix.size(), suffix) == 0) {
        return o.body;
      }
    }
    ADD_FAILURE() << "no " << kind << " *" << suffix;
    return Json::object();
  }
  static std::vector<std::string> Args(const Json& workload) {
    return workload["spec"]["template"]["spec"]["containers"][0]["args"].get<std::vector<std::string>>();
  }
  static std::string After(const std::vector<std::string>& args, const std::string& flag) {
    for (size_t i = 0; i + 1 < args.size(); ++i) {
      if (args[i] == flag) return args[i + 1];
    }
    return "<missing " + flag + ">";
  }

  std::string dir_;
  JobSpec job_;
  KubernetesOptions options_;
};

TEST_F(KubernetesManifestsTest, RendersEveryObjectInApplyOrder) {
  std::vector<std::string> kinds;
  for (const KubernetesObject& o : Render()) kinds.push_back(o.kind + "/" + o.name);
  const std::string n = KubernetesName("Tiny_Job.v2");
  EXPECT_THAT(kinds, ElementsAre("ConfigMap/" + n + "-spec", "Secret/" + n + "-token", "Service/" + n + "-server",
                                 "StatefulSet/" + n + "-server", "Job/" + n + "-learner", "Job/" + n + "-evaluator",
                                 "NetworkPolicy/" + n + "-isolation"));
}

TEST_F(KubernetesManifestsTest, ShardsAndLearnersTakeTheirIndexFromKubernetes) {
  std::vector<KubernetesObject> objects = Render();
  const std::string n = KubernetesName(job_.name);
  const Json sts = Find(objects, "StatefulSet", "-server");
  EXPECT_EQ(sts["spec"]["replicas"], 2);
  EXPECT_EQ(sts["spec"]["serviceName"], n + "-server");
  EXPECT_EQ(After(Args(sts), "--shard"), "$(ORRERY_SHARD)");
  EXPECT_EQ(After(Args(sts), "--shards"), "2");
  EXPECT_EQ(After(Args(sts), "--listen"), "0.0.0.0:7070");
  EXPECT_THAT(sts.dump(), HasSubstr("metadata.labels['apps.kubernetes.io/pod-index']"));
  const Json svc = Find(objects, "Service", "-server");
  EXPECT_EQ(svc["spec"]["clusterIP"], "None");

  const Json learners = Find(objects, "Job", "-learner");
  EXPECT_EQ(learners["spec"]["completionMode"], "Indexed");
  EXPECT_EQ(learners["spec"]["completions"], 3);
  EXPECT_EQ(learners["spec"]["parallelism"], 3);
  EXPECT_EQ(After(Args(learners), "--index"), "$(JOB_COMPLETION_INDEX)");
  EXPECT_EQ(After(Args(learners), "--servers"),
            n + "-server-0." + n + "-server:7070," + n + "-server-1." + n + "-server:7070");
  EXPECT_EQ(After(Args(learners), "--model"), "/etc/orrery/job/model.yaml");
  const Json evaluator = Find(objects, "Job", "-evaluator");
  EXPECT_THAT(Args(evaluator), Contains("--evaluator"));
}

TEST_F(KubernetesManifestsTest, TheTokenLivesOnlyInTheSecret) {
  std::vector<KubernetesObject> objects = Render();
  EXPECT_EQ(Find(objects, "Secret", "-token")["stringData"]["token"], "s3cret-token");
  for (const KubernetesObject& o : objects) {
    if (o.kind != "Secret") {
      EXPECT_THAT(o.body.dump(), Not(HasSubstr("s3cret-token"))) << o.kind;
    }
  }
  EXPECT_THAT(Find(objects, "Job", "-learner").dump(), HasSubstr("secretKeyRef"));
  options_.secret = false;
  for (const KubernetesObject& o : Render()) EXPECT_NE(o.kind, "Secret");
  options_.token.clear();
  options_.secret = true;
  const std::string random = Find(Render(), "Secret", "-token")["stringData"]["token"];
  EXPECT_EQ(random.size(), 64u);
}

TEST_F(KubernetesManifestsTest, NetworkPolicyAdmitsOnlyTheJobsOwnPodsToTheShards) {
  const Json np = Find(Render(), "NetworkPolicy", "-isolation");
  const std::string n = KubernetesName(job_.name);
  EXPECT_EQ(np["spec"]["podSelector"]["matchLabels"]["orrery.io/job"], n);
  EXPECT_EQ(np["spec"]["policyTypes"], Json::array({"Ingress"}));
  ASSERT_EQ(np["spec"]["ingress"].size(), 1u);
  const Json& rule = np["spec"]["ingress"][0];
  EXPECT_EQ(rule["from"], Json::parse(R"([{"podSelector":{"matchLabels":{"orrery.io/job":")" + n + R"("}}}])"));
  EXPECT_EQ(rule["ports"][0]["port"], 7070);
}

TEST_F(KubernetesManifestsTest, PodsRunAsNonRootOnAReadOnlyRoot) {
  for (const char* suffix : {"-learner", "-evaluator"}) {
    const Json pod = Find(Render(), "Job", suffix)["spec"]["template"]["spec"];
    EXPECT_EQ(pod["securityContext"]["runAsNonRoot"], true);
    EXPECT_EQ(pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"], true);
    EXPECT_EQ(pod["containers"][0]["securityContext"]["allowPrivilegeEscalation"], false);
  }
}

TEST_F(KubernetesManifestsTest, TheConfigMapSpecParsesAsThePodsSeeIt) {
  const Json cm = Find(Render(), "ConfigMap", "-spec");
  std::string spec = cm["data"]["job.yaml"];
  const std::string model = cm["data"]["model.yaml"];
  std::ofstream(dir_ + "/model.yaml") << model;
  spec.replace(spec.find("/etc/orrery/job/model.yaml"), 26, dir_ + "/model.yaml");
  absl::StatusOr<JobSpec> parsed = ParseJobSpec(spec, dir_);
  ASSERT_TRUE(parsed.ok()) << parsed.status() << "\n" << spec;
  EXPECT_EQ(parsed->name, job_.name);
  EXPECT_EQ(parsed->learners, 3);
  EXPECT_EQ(parsed->backend, BackendKind::kKubernetes);
  EXPECT_EQ(parsed->data_dir, "/usr/share/datasets/fashion-mnist");
}

TEST_F(KubernetesManifestsTest, YamlReadsBackWithTypesKept) {
  const Json sts = Find(Render(), "StatefulSet", "-server");
  YAML::Node node = YAML::Load(ManifestYaml(sts));
  EXPECT_EQ(node["spec"]["replicas"].as<int>(), 2);
  const YAML::Node args = node["spec"]["template"]["spec"]["containers"][0]["args"];
  for (size_t i = 0; i < args.size(); ++i) {
    EXPECT_EQ(args[i].as<std::string>(), Args(sts)[i]);
    // Numbers on a command line stay strings: a plain 2 would be an integer to Kubernetes.
    if (Args(sts)[i] == "2") {
      EXPECT_EQ(args[i].Tag(), "!");
    }
  }
  const std::string cm = ManifestYaml(Find(Render(), "ConfigMap", "-spec"));
  EXPECT_THAT(cm, HasSubstr("job.yaml: |"));
}

TEST_F(KubernetesManifestsTest, NamesAreShortDnsLabels) {
  EXPECT_EQ(KubernetesName("fashion-mnist"), "fashion-mnist");
  const std::string odd = KubernetesName("Tiny_Job.v2");
  EXPECT_THAT(odd, ::testing::MatchesRegex("tiny-job-v2-[0-9a-f]{6}"));
  EXPECT_NE(KubernetesName("a_b"), KubernetesName("a.b"));
  const std::string long_name = KubernetesName(std::string(63, 'x'));
  EXPECT_LE(long_name.size(), 40u);
  EXPECT_THAT(KubernetesName("9lives"), ::testing::StartsWith("job-9lives"));
}

TEST_F(KubernetesManifestsTest, SlowLearnersAreRefusedWithTheKeyNamed) {
  job_.slow_learners.push_back(SlowLearner{1, 2.0});
  absl::StatusOr<std::vector<KubernetesObject>> objects = RenderKubernetes(job_, options_);
  ASSERT_EQ(objects.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(objects.status().message()), HasSubstr("slow_learners"));
}

TEST_F(KubernetesManifestsTest, BindCoresIsRefusedPointingAtTheKubelet) {
  job_.bind = Binding::kCores;
  absl::StatusOr<std::vector<KubernetesObject>> objects = RenderKubernetes(job_, options_);
  ASSERT_EQ(objects.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(objects.status().message()), HasSubstr("bind: cores"));
  EXPECT_THAT(std::string(objects.status().message()), HasSubstr("CPU manager policy static"));
}

TEST_F(KubernetesManifestsTest, WritesOneFilePerObjectAndAKustomization) {
  absl::StatusOr<std::vector<std::string>> written = WriteKubernetesManifests(Render(), dir_ + "/out");
  ASSERT_TRUE(written.ok()) << written.status();
  EXPECT_EQ(written->size(), 8u);
  YAML::Node k = YAML::LoadFile(dir_ + "/out/kustomization.yaml");
  EXPECT_EQ(k["resources"].size(), 7u);
  for (const auto& r : k["resources"]) EXPECT_TRUE(std::filesystem::exists(dir_ + "/out/" + r.as<std::string>()));
}

}  // namespace
}  // namespace orrery::scheduler
