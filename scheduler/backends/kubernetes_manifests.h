// The `kubernetes` backend's manifests: one job as Kubernetes objects — a ConfigMap with the job
// and model specs, a Secret with the job token, a headless Service and a StatefulSet for the
// shards (stable DNS names <job>-server-<i>.<job>-server), an Indexed Job for the learners, a Job
// for the evaluator, and a NetworkPolicy that admits only the job's own pods to the shards.
// Needs Kubernetes 1.29 or newer (the pod-index label, backoffLimitPerIndex).
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "scheduler/job_spec.h"

namespace orrery::scheduler {

struct KubernetesOptions {
  std::string image = "orrery:latest";  // built from deploy/Dockerfile
  std::string image_pull_policy = "IfNotPresent";
  std::string namespace_name;            // "": left out (kubectl -n or kustomize sets it)
  std::string token;                     // "": a random one
  bool secret = true;                    // false: leave the Secret out (a kustomize overlay makes it)
  int port = 7070;                       // the shards' gRPC port
  std::string data_dir = "/usr/share/datasets/fashion-mnist";  // inside the image
  int threads_per_learner = 1;
  std::string server_cpu = "500m", server_memory = "512Mi";
  std::string learner_cpu = "1", learner_memory = "1Gi";
  std::string evaluator_cpu = "500m", evaluator_memory = "1Gi";
};

struct KubernetesObject {
  std::string kind;  // "StatefulSet", ...
  std::string name;  // metadata.name
  nlohmann::ordered_json body;
};

// The Kubernetes name of a job: a DNS label of at most 40 characters (so that every derived
// name fits), lower case; a short hash is appended when the job name had to change.
std::string KubernetesName(const std::string& job_name);

// Renders `job`, reading its model spec (errors: the model file unreadable, INVALID_ARGUMENT for
// what Kubernetes cannot express: slow_learners, bind: cores). Objects come in apply order.
absl::StatusOr<std::vector<KubernetesObject>> RenderKubernetes(const JobSpec& job,
                                                                const KubernetesOptions& options);

// One YAML document (no leading "---"). Strings that YAML would read as something else are
// quoted; multi-line strings are literal blocks.
std::string ManifestYaml(const nlohmann::ordered_json& object);

// Writes each object to `dir` as NN-kind-name.yaml (or .json), plus a kustomization.yaml that
// lists them, and returns the paths written.
absl::StatusOr<std::vector<std::string>> WriteKubernetesManifests(const std::vector<KubernetesObject>& objects,
                                                                  const std::string& dir, bool json = false);

}  // namespace orrery::scheduler
