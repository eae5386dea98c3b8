#include "scheduler/backends/kubernetes_manifests.h"

#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <regex>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "base/random_token.h"
#include "scheduler/backends/job_spec_yaml.h"
#include "scheduler/run_job.h"
#include "yaml-cpp/yaml.h"

namespace orrery::scheduler {
namespace {

using Json = nlohmann::ordered_json;
namespace fs = std::filesystem;

constexpr char kJobMount[] = "/etc/orrery/job";
constexpr size_t kMaxName = 40;

// Sets the value after `flag` in `argv`.
void SetFlag(std::vector<std::string>& argv, const std::string& flag, const std::string& value) {
  for (size_t i = 0; i + 1 < argv.size(); ++i) {
    if (argv[i] == flag) argv[i + 1] = value;
  }
}

Json Labels(const std::string& name, const std::string& role) {
  return Json{{"app.kubernetes.io/name", "orrery"},
              {"app.kubernetes.io/instance", name},
              {"app.kubernetes.io/component", role},
              {"orrery.io/job", name},
              {"orrery.io/role", role}};
}

Json Selector(const std::string& name, const std::string& role) {
  return Json{{"orrery.io/job", name}, {"orrery.io/role", role}};
}

Json Metadata(const std::string& object_name, const std::string& job, const std::string& role,
              const std::string& job_name, const KubernetesOptions& o) {
  Json m = Json::object();
  m["name"] = object_name;
  if (!o.namespace_name.empty()) m["namespace"] = o.namespace_name;
  m["labels"] = Labels(job, role);
  m["annotations"] = Json{{"orrery.io/job-name", job_name}};
  return m;
}

// A container running `orrery ARGS...` as a non-root user on a read-only root filesystem.
Json Container(const std::string& name, const std::vector<std::string>& argv, const std::string& secret,
               const std::string& cpu, const std::string& memory, const KubernetesOptions& o, Json extra_env) {
  Json env = Json::array();
  env.push_back({{"name", "ORRERY_TOKEN"},
                 {"valueFrom", {{"secretKeyRef", {{"name", secret}, {"key", "token"}}}}}});
  env.push_back({{"name", "OMP_WAIT_POLICY"}, {"value", "passive"}});
  for (auto& e : extra_env) env.push_back(e);
  Json c = Json::object();
  c["name"] = name;
  c["image"] = o.image;
  c["imagePullPolicy"] = o.image_pull_policy;
  c["command"] = Json::array({"orrery"});
  c["args"] = Json(std::vector<std::string>(argv.begin() + 1, argv.end()));
  c["env"] = env;
  c["resources"] = {{"requests", {{"cpu", cpu}, {"memory", memory}}}, {"limits", {{"memory", memory}}}};
  c["volumeMounts"] = Json::array({{{"name", "job"}, {"mountPath", kJobMount}, {"readOnly", true}}});
  c["securityContext"] = {{"allowPrivilegeEscalation", false},
                          {"readOnlyRootFilesystem", true},
                          {"capabilities", {{"drop", Json::array({"ALL"})}}}};
  return c;
}

Json PodSpec(Json container, const std::string& config_map, const std::string& restart_policy, int grace_seconds) {
  Json spec = Json::object();
  spec["restartPolicy"] = restart_policy;
  spec["terminationGracePeriodSeconds"] = grace_seconds;
  spec["automountServiceAccountToken"] = false;
  spec["securityContext"] = {{"runAsNonRoot", true},
                             {"runAsUser", 10001},
                             {"runAsGroup", 10001},
                             {"seccompProfile", {{"type", "RuntimeDefault"}}}};
  spec["containers"] = Json::array({std::move(container)});
  spec["volumes"] = Json::array({{{"name", "job"}, {"configMap", {{"name", config_map}}}}});
  return spec;
}

bool PlainSafe(const std::string& s) {
  static const std::regex kPlain(R"(^[A-Za-z_/][A-Za-z0-9_./=@-]*$)");
  if (!std::regex_match(s, kPlain)) return false;
  const std::string lower = absl::AsciiStrToLower(s);
  for (const char* word : {"true", "false", "yes", "no", "on", "off", "null", "y", "n"}) {
    if (lower == word) return false;
  }
  return true;
}

void Emit(YAML::Emitter& out, const Json& j) {
  switch (j.type()) {
    case Json::value_t::object:
      if (j.empty()) {
        out << YAML::Flow << YAML::BeginMap << YAML::EndMap;
        return;
      }
      out << YAML::BeginMap;
      for (const auto& [key, value] : j.items()) {
        out << YAML::Key;
        if (PlainSafe(key)) {
          out << key;
        } else {
          out << YAML::DoubleQuoted << key;
        }
        out << YAML::Value;
        Emit(out, value);
      }
      out << YAML::EndMap;
      return;
    case Json::value_t::array:
      if (j.empty()) {
        out << YAML::Flow << YAML::BeginSeq << YAML::EndSeq;
        return;
      }
      out << YAML::BeginSeq;
      for (const auto& v : j) Emit(out, v);
      out << YAML::EndSeq;
      return;
    case Json::value_t::string: {
      const std::string& s = j.get_ref<const std::string&>();
      if (s.find('\n') != std::string::npos) {
        out << YAML::Literal << s;
      } else if (PlainSafe(s)) {
        out << s;
      } else {
        out << YAML::DoubleQuoted << s;
      }
      return;
    }
    case Json::value_t::boolean:
      out << (j.get<bool>() ? "true" : "false");
      return;
    case Json::value_t::number_integer:
    case Json::value_t::number_unsigned:
      out << j.dump();
      return;
    case Json::value_t::number_float:
      out << j.dump();
      return;
    default:
      out << YAML::Null;
  }
}

}  // namespace

std::string KubernetesName(const std::string& job_name) {
  std::string name;
  for (char c : absl::AsciiStrToLower(job_name)) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
    if (ok) {
      name += c;
    } else if (!name.empty() && name.back() != '-') {
      name += '-';
    }
  }
  if (name.empty() || !(name[0] >= 'a' && name[0] <= 'z')) name = "job-" + name;
  while (!name.empty() && name.back() == '-') name.pop_back();
  if (name == job_name && name.size() <= kMaxName) return name;
  const std::string hash = absl::StrFormat("%06x", std::hash<std::string>()(job_name) & 0xffffff);
  if (name.size() > kMaxName - 7) name.resize(kMaxName - 7);
  while (!name.empty() && name.back() == '-') name.pop_back();
  return absl::StrCat(name, "-", hash);
}

absl::StatusOr<std::vector<KubernetesObject>> RenderKubernetes(const JobSpec& job, const KubernetesOptions& o) {
  if (!job.slow_learners.empty()) {
    return absl::InvalidArgumentError("slow_learners: straggler emulation is not supported on kubernetes");
  }
  if (job.bind == Binding::kCores) {
    return absl::InvalidArgumentError(
        "bind: cores is for `orrery run`; on kubernetes the kubelet pins containers (CPU manager policy "
        "static, with whole-CPU requests equal to limits)");
  }
  std::ifstream model_in(job.model_path);
  std::stringstream model;
  model << model_in.rdbuf();
  if (!model_in) return absl::NotFoundError(absl::StrCat("model: cannot read ", job.model_path));

  const std::string name = KubernetesName(job.name);
  const std::string servers = name + "-server", config_map = name + "-spec", secret = name + "-token";
  // The spec as the pods see it: the model from the ConfigMap, the data set from the image.
  JobSpec in_pod = job;
  in_pod.model_path = absl::StrCat(kJobMount, "/model.yaml");
  in_pod.data_dir = o.data_dir;
  in_pod.backend = BackendKind::kKubernetes;
  in_pod.checkpoint.reset();
  std::vector<std::string> endpoints;
  for (int s = 0; s < job.servers; ++s) endpoints.push_back(absl::StrCat(servers, "-", s, ".", servers, ":", o.port));

  std::vector<KubernetesObject> objects;
  auto add = [&objects](std::string kind, std::string object_name, Json body) {
    objects.push_back(KubernetesObject{std::move(kind), std::move(object_name), std::move(body)});
  };

  Json cm = {{"apiVersion", "v1"}, {"kind", "ConfigMap"}, {"metadata", Metadata(config_map, name, "spec", job.name, o)}};
  cm["data"] = {{"job.yaml", JobSpecToYaml(in_pod)}, {"model.yaml", model.str()}};
  add("ConfigMap", config_map, std::move(cm));

  if (o.secret) {
    Json s = {{"apiVersion", "v1"}, {"kind", "Secret"}, {"metadata", Metadata(secret, name, "token", job.name, o)}};
    s["type"] = "Opaque";
    s["stringData"] = {{"token", o.token.empty() ? RandomToken() : o.token}};
    add("Secret", secret, std::move(s));
  }

  Json svc = {{"apiVersion", "v1"}, {"kind", "Service"}, {"metadata", Metadata(servers, name, "server", job.name, o)}};
  svc["spec"] = {{"clusterIP", "None"},
                 {"publishNotReadyAddresses", true},
                 {"selector", Selector(name, "server")},
                 {"ports", Json::array({{{"name", "grpc"}, {"port", o.port}, {"targetPort", o.port}, {"protocol", "TCP"}}})}};
  add("Service", servers, std::move(svc));

  // Shards: the pod index (a label Kubernetes sets on StatefulSet pods) is the shard index.
  std::vector<std::string> server_argv = ServerArgv(in_pod, "orrery", 0, absl::StrCat("0.0.0.0:", o.port));
  SetFlag(server_argv, "--shard", "$(ORRERY_SHARD)");
  const int metrics_port = o.port + 1;  // Prometheus /metrics of the shard
  SetFlag(server_argv, "--metrics-listen", absl::StrCat("0.0.0.0:", metrics_port));
  Json server = Container("server", server_argv, secret, o.server_cpu, o.server_memory, o,
                          Json::array({{{"name", "ORRERY_SHARD"},
                                        {"valueFrom", {{"fieldRef", {{"fieldPath", "metadata.labels['apps.kubernetes.io/pod-index']"}}}}}}}));
  server["ports"] = Json::array({{{"name", "grpc"}, {"containerPort", o.port}, {"protocol", "TCP"}},
                                 {{"name", "metrics"}, {"containerPort", metrics_port}, {"protocol", "TCP"}}});
  server["readinessProbe"] = {{"tcpSocket", {{"port", o.port}}}, {"periodSeconds", 2}};
  Json sts = {{"apiVersion", "apps/v1"}, {"kind", "StatefulSet"}, {"metadata", Metadata(servers, name, "server", job.name, o)}};
  sts["spec"] = {{"serviceName", servers},
                 {"replicas", job.servers},
                 {"podManagementPolicy", "Parallel"},
                 {"selector", {{"matchLabels", Selector(name, "server")}}},
                 {"template", {{"metadata", {{"labels", Labels(name, "server")}}},
                               {"spec", PodSpec(std::move(server), config_map, "Always", 30)}}}};
  add("StatefulSet", servers, std::move(sts));

  // Learners: one Indexed Job; the completion index is the learner index. Each index is retried
  // on its own (backoffLimitPerIndex), so a failed learner does not stop the others.
  std::vector<std::string> learner_argv = LearnerArgv(in_pod, "orrery", 0, endpoints, o.threads_per_learner);
  SetFlag(learner_argv, "--index", "$(JOB_COMPLETION_INDEX)");
  const std::string learners = name + "-learner";
  Json learner_job = {{"apiVersion", "batch/v1"}, {"kind", "Job"}, {"metadata", Metadata(learners, name, "learner", job.name, o)}};
  learner_job["spec"] = {
      {"completionMode", "Indexed"},
      {"completions", job.learners},
      {"parallelism", job.learners},
      {"backoffLimitPerIndex", job.restart.max_restarts},
      {"maxFailedIndexes", job.learners},
      {"template", {{"metadata", {{"labels", Labels(name, "learner")}}},
                    {"spec", PodSpec(Container("learner", learner_argv, secret, o.learner_cpu, o.learner_memory, o,
                                               Json::array()),
                                     config_map, "Never", 30)}}}};
  add("Job", learners, std::move(learner_job));

  // The evaluator observes until it is deleted (SIGTERM): its final evaluation is the job's
  // result, so it gets time for one.
  const std::string evaluator = name + "-evaluator";
  Json eval_job = {{"apiVersion", "batch/v1"}, {"kind", "Job"}, {"metadata", Metadata(evaluator, name, "evaluator", job.name, o)}};
  eval_job["spec"] = {
      {"completions", 1},
      {"parallelism", 1},
      {"backoffLimit", 3},
      {"template", {{"metadata", {{"labels", Labels(name, "evaluator")}}},
                    {"spec", PodSpec(Container("evaluator", EvaluatorArgv(in_pod, "orrery", endpoints, 1), secret,
                                               o.evaluator_cpu, o.evaluator_memory, o, Json::array()),
                                     config_map, "OnFailure", 120)}}}};
  add("Job", evaluator, std::move(eval_job));

  // Only this job's pods may reach its shards; nothing reaches its learners or evaluator.
  const std::string policy = name + "-isolation";
  Json np = {{"apiVersion", "networking.k8s.io/v1"}, {"kind", "NetworkPolicy"},
             {"metadata", Metadata(policy, name, "isolation", job.name, o)}};
  np["spec"] = {{"podSelector", {{"matchLabels", {{"orrery.io/job", name}}}}},
                {"policyTypes", Json::array({"Ingress"})},
                {"ingress", Json::array({{{"from", Json::array({{{"podSelector", {{"matchLabels", {{"orrery.io/job", name}}}}}}})},
                                          {"ports", Json::array({{{"protocol", "TCP"}, {"port", o.port}}})}}})}};
  add("NetworkPolicy", policy, std::move(np));
  return objects;
}

std::string ManifestYaml(const nlohmann::ordered_json& object) {
  YAML::Emitter out;
  out.SetIndent(2);
  Emit(out, object);
  return std::string(out.c_str()) + "\n";
}

absl::StatusOr<std::vector<std::string>> WriteKubernetesManifests(const std::vector<KubernetesObject>& objects,
                                                                  const std::string& dir, bool json) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("cannot create ", dir, ": ", ec.message()));
  std::vector<std::string> written, names;
  for (size_t i = 0; i < objects.size(); ++i) {
    const KubernetesObject& o = objects[i];
    const std::string file = absl::StrFormat("%02d-%s-%s.%s", i, absl::AsciiStrToLower(o.kind), o.name, json ? "json" : "yaml");
    const fs::path path = fs::path(dir) / file;
    std::ofstream out(path, std::ios::trunc);
    out << (json ? o.body.dump(2) + "\n" : ManifestYaml(o.body));
    out.close();
    if (!out) return absl::UnavailableError(absl::StrCat("cannot write ", path.string()));
    if (o.kind == "Secret") ::chmod(path.c_str(), 0600);
    written.push_back(path.string());
    names.push_back(file);
  }
  Json kustomization = {{"apiVersion", "kustomize.config.k8s.io/v1beta1"}, {"kind", "Kustomization"},
                        {"resources", Json(names)}};
  const fs::path path = fs::path(dir) / "kustomization.yaml";
  std::ofstream out(path, std::ios::trunc);
  out << "# Written by orrery render-k8s: kubectl apply -k " << dir << "\n" << ManifestYaml(kustomization);
  out.close();
  if (!out) return absl::UnavailableError(absl::StrCat("cannot write ", path.string()));
  written.push_back(path.string());
  return written;
}

}  // namespace orrery::scheduler
