#include "scheduler/job_spec.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include <google/protobuf/stubs/common.h>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "base/job_limits.h"
#include "base/quote.h"
#include "base/status_macros.h"
#include "base/yaml_document.h"
#include "yaml-cpp/yaml.h"

namespace orrery::scheduler {
namespace {

namespace fs = std::filesystem;

std::string KeyPath(const std::string& prefix, absl::string_view key) {
  return prefix.empty() ? std::string(key) : absl::StrCat(prefix, ".", key);
}

absl::Status Invalid(const std::string& key, absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat(key, ": ", message));
}

// The keys of a YAML map, in order, after checking that every key is allowed and unique.
absl::StatusOr<std::vector<std::pair<std::string, YAML::Node>>> MapEntries(
    const YAML::Node& node, const std::string& path, const std::vector<absl::string_view>& allowed) {
  if (!node.IsMap()) {
    return path.empty() ? absl::InvalidArgumentError("a job spec must be a YAML mapping of keys")
                        : Invalid(path, "expected a mapping of keys");
  }
  std::vector<std::pair<std::string, YAML::Node>> entries;
  std::set<std::string> seen;
  for (auto it = node.begin(); it != node.end(); ++it) {
    if (!it->first.IsScalar()) return Invalid(path.empty() ? "(top level)" : path, "keys must be plain names");
    std::string key = it->first.Scalar();
    std::string full = KeyPath(path, key);
    bool known = false;
    for (absl::string_view a : allowed) known = known || a == key;
    if (!known) {
      return Invalid(full, absl::StrCat("unknown key (expected one of: ", absl::StrJoin(allowed, ", "), ")"));
    }
    if (!seen.insert(key).second) return Invalid(full, "duplicate key");
    entries.emplace_back(key, it->second);
  }
  return entries;
}

absl::StatusOr<std::string> Scalar(const YAML::Node& node, const std::string& key) {
  if (!node || node.IsNull()) return Invalid(key, "missing value");
  if (!node.IsScalar()) return Invalid(key, "expected a single value, got a list or mapping");
  return node.Scalar();
}

absl::StatusOr<int64_t> Integer(const YAML::Node& node, const std::string& key, int64_t min,
                                absl::string_view what, int64_t max = std::numeric_limits<int64_t>::max()) {
  ASSIGN_OR_RETURN(std::string text, Scalar(node, key));
  int64_t value = 0;
  if (!absl::SimpleAtoi(text, &value) || value < min || value > max) {
    return Invalid(key, absl::StrCat("expected ", what, ", got ", Quoted(text)));
  }
  return value;
}

absl::StatusOr<int> Int32(const YAML::Node& node, const std::string& key, int64_t min,
                          absl::string_view what, int64_t max = std::numeric_limits<int64_t>::max()) {
  ASSIGN_OR_RETURN(int64_t value, Integer(node, key, min, what, max));
  if (value > std::numeric_limits<int>::max()) {
    return Invalid(key, absl::StrCat("expected ", what, ", got ", value, " (too large)"));
  }
  return static_cast<int>(value);
}

// A finite number accepted by `ok`, which `what` describes ("a number > 0").
template <typename Pred>
absl::StatusOr<double> Number(const YAML::Node& node, const std::string& key, Pred ok,
                              absl::string_view what) {
  ASSIGN_OR_RETURN(std::string text, Scalar(node, key));
  double value = 0;
  if (!absl::SimpleAtod(text, &value) || !std::isfinite(value) || !ok(value)) {
    return Invalid(key, absl::StrCat("expected ", what, ", got ", Quoted(text)));
  }
  return value;
}

absl::StatusOr<absl::Duration> Seconds(const YAML::Node& node, const std::string& key) {
  ASSIGN_OR_RETURN(double s, Number(node, key, [](double v) { return v > 0; }, "a number of seconds > 0"));
  return absl::Seconds(s);
}

template <typename Enum>
absl::StatusOr<Enum> Choice(const YAML::Node& node, const std::string& key,
                            const std::vector<std::pair<absl::string_view, Enum>>& choices) {
  ASSIGN_OR_RETURN(std::string text, Scalar(node, key));
  std::vector<absl::string_view> names;
  for (const auto& [name, value] : choices) {
    if (name == text) return value;
    names.push_back(name);
  }
  std::string expected = names.size() == 2 ? absl::StrJoin(names, " or ") : absl::StrJoin(names, ", ");
  if (names.size() > 2) expected = absl::StrCat("one of ", expected);
  return Invalid(key, absl::StrCat("expected ", expected, ", got ", Quoted(text)));
}

fs::path Absolute(const fs::path& p) {
  std::error_code ec;
  fs::path abs = fs::absolute(p, ec);
  return (ec ? p : abs).lexically_normal();
}

// Candidate locations of a relative path: the job file's directory, then the current directory.
std::vector<fs::path> Candidates(const std::string& value, const std::string& base_dir) {
  fs::path p(value);
  if (p.is_absolute()) return {p.lexically_normal()};
  std::vector<fs::path> out;
  if (!base_dir.empty()) out.push_back(Absolute(fs::path(base_dir) / p));
  fs::path from_cwd = Absolute(p);
  if (out.empty() || out.front() != from_cwd) out.push_back(from_cwd);
  return out;
}

absl::StatusOr<std::string> ResolveExistingFile(const YAML::Node& node, const std::string& key,
                                                const std::string& base_dir) {
  ASSIGN_OR_RETURN(std::string value, Scalar(node, key));
  if (value.empty()) return Invalid(key, "empty path");
  std::vector<fs::path> candidates = Candidates(value, base_dir);
  std::vector<std::string> tried;
  for (const fs::path& c : candidates) {
    std::error_code ec;
    if (fs::is_regular_file(c, ec)) return c.string();
    tried.push_back(c.string());
  }
  return Invalid(key, absl::StrCat("file '", value, "' not found (looked for ", absl::StrJoin(tried, " and "), ")"));
}

// Like ResolveExistingFile, but a path that exists nowhere yet resolves against base_dir.
absl::StatusOr<std::string> ResolveDir(const YAML::Node& node, const std::string& key,
                                       const std::string& base_dir) {
  ASSIGN_OR_RETURN(std::string value, Scalar(node, key));
  if (value.empty()) return Invalid(key, "empty path");
  std::vector<fs::path> candidates = Candidates(value, base_dir);
  for (const fs::path& c : candidates) {
    std::error_code ec;
    if (fs::exists(c, ec)) return c.string();
  }
  return candidates.front().string();
}

absl::Status ParseLr(const YAML::Node& node, LearningRate* lr) {
  ASSIGN_OR_RETURN(auto entries, MapEntries(node, "lr", {"base", "staleness", "momentum",
                                                         "decay_epochs", "decay_factor"}));
  for (const auto& [key, value] : entries) {
    std::string full = KeyPath("lr", key);
    if (key == "base") {
      ASSIGN_OR_RETURN(lr->base, Number(value, full, [](double v) { return v > 0; }, "a number > 0"));
    } else if (key == "staleness") {
      ASSIGN_OR_RETURN(lr->staleness, Choice<LrStaleness>(value, full, {{"none", LrStaleness::kNone},
                                                                        {"inverse", LrStaleness::kInverse}}));
    } else if (key == "momentum") {
      ASSIGN_OR_RETURN(lr->momentum, Number(value, full, [](double v) { return v >= 0 && v < 1; },
                                            "a number in [0, 1)"));
    } else if (key == "decay_factor") {
      ASSIGN_OR_RETURN(lr->decay_factor, Number(value, full, [](double v) { return v > 0 && v <= 1; },
                                                "a number in (0, 1]"));
    } else if (key == "decay_epochs") {
      if (!value.IsSequence()) return Invalid(full, "expected a list of epochs, for example [5, 7]");
      lr->decay_epochs.clear();
      for (size_t i = 0; i < value.size(); ++i) {
        const std::string item = absl::StrCat(full, "[", i, "]");
        ASSIGN_OR_RETURN(double epoch, Number(value[i], item, [](double v) { return v > 0; },
                                              "an epoch > 0"));
        if (!lr->decay_epochs.empty() && epoch <= lr->decay_epochs.back()) {
          return Invalid(item, absl::StrCat("epochs must ascend; ", epoch, " follows ",
                                            lr->decay_epochs.back()));
        }
        lr->decay_epochs.push_back(epoch);
      }
    }
  }
  return absl::OkStatus();
}

absl::Status ParseSlowLearners(const YAML::Node& node, std::vector<SlowLearner>* out) {
  if (node.IsNull()) return absl::OkStatus();
  if (!node.IsSequence()) return Invalid("slow_learners", "expected a list of {learner, factor}");
  for (size_t i = 0; i < node.size(); ++i) {
    std::string path = absl::StrCat("slow_learners[", i, "]");
    ASSIGN_OR_RETURN(auto entries, MapEntries(node[i], path, {"learner", "factor"}));
    SlowLearner slow;
    bool has_learner = false, has_factor = false;
    for (const auto& [key, value] : entries) {
      std::string full = KeyPath(path, key);
      if (key == "learner") {
        ASSIGN_OR_RETURN(slow.learner, Int32(value, full, 0, "a learner index >= 0"));
        has_learner = true;
      } else {
        ASSIGN_OR_RETURN(slow.factor, Number(value, full, [](double v) { return v >= 1 && v <= kMaxSlowFactor; },
                                              absl::StrCat("a factor in [1, ", kMaxSlowFactor, "]")));
        has_factor = true;
      }
    }
    if (!has_learner) return Invalid(KeyPath(path, "learner"), "missing");
    if (!has_factor) return Invalid(KeyPath(path, "factor"), "missing");
    out->push_back(slow);
  }
  return absl::OkStatus();
}

absl::Status ParseRestart(const YAML::Node& node, RestartPolicy* policy) {
  ASSIGN_OR_RETURN(auto entries, MapEntries(node, "restart", {"max_restarts", "backoff_seconds",
                                                              "max_backoff_seconds"}));
  for (const auto& [key, value] : entries) {
    std::string full = KeyPath("restart", key);
    if (key == "max_restarts") {
      ASSIGN_OR_RETURN(policy->max_restarts, Int32(value, full, 0, "an integer >= 0"));
    } else {
      ASSIGN_OR_RETURN(double s, Number(value, full, [](double v) { return v >= 0; }, "a number of seconds >= 0"));
      (key == "backoff_seconds" ? policy->backoff : policy->max_backoff) = absl::Seconds(s);
    }
  }
  if (policy->max_backoff < policy->backoff) {
    return Invalid("restart.max_backoff_seconds", "must be >= restart.backoff_seconds");
  }
  return absl::OkStatus();
}

absl::Status ParseCheckpoint(const YAML::Node& node, const std::string& base_dir, CheckpointSpec* out) {
  ASSIGN_OR_RETURN(auto entries, MapEntries(node, "checkpoint", {"dir", "every_seconds"}));
  bool has_dir = false, has_every = false;
  for (const auto& [key, value] : entries) {
    std::string full = KeyPath("checkpoint", key);
    if (key == "dir") {
      ASSIGN_OR_RETURN(out->dir, ResolveDir(value, full, base_dir));
      has_dir = true;
    } else {
      ASSIGN_OR_RETURN(out->every, Seconds(value, full));
      has_every = true;
    }
  }
  if (!has_dir) return Invalid("checkpoint.dir", "missing");
  if (!has_every) return Invalid("checkpoint.every_seconds", "missing");
  return absl::OkStatus();
}

absl::Status ParseTls(const YAML::Node& node, const std::string& base_dir, TlsSpec* out) {
  ASSIGN_OR_RETURN(auto entries, MapEntries(node, "tls", {"ca", "cert", "key", "mutual"}));
  for (const auto& [key, value] : entries) {
    std::string full = KeyPath("tls", key);
    if (key == "mutual") {
      ASSIGN_OR_RETURN(out->mutual, Choice<bool>(value, full, {{"true", true}, {"false", false}}));
    } else {
      ASSIGN_OR_RETURN((key == "ca" ? out->ca : key == "cert" ? out->cert : out->key),
                       ResolveExistingFile(value, full, base_dir));
    }
  }
  for (const char* key : {"ca", "cert", "key"}) {
    const std::string& v = std::string(key) == "ca" ? out->ca : std::string(key) == "cert" ? out->cert : out->key;
    if (v.empty()) return Invalid(KeyPath("tls", key), "missing");
  }
  return absl::OkStatus();
}

absl::Status ParsePrecision(const YAML::Node& node, PrecisionSpec* out) {
  ASSIGN_OR_RETURN(auto entries,
                   MapEntries(node, "precision", {"wire", "weights", "compute", "fl"}));
  const std::vector<std::pair<absl::string_view, NumberFormat>> formats = {
      {"fp32", NumberFormat::kFp32}, {"fixed16", NumberFormat::kFixed16}};
  for (const auto& [key, value] : entries) {
    if (key == "fl") {
      const std::string what = absl::StrCat("an integer in [0, ", kMaxSpecFractionalBits, "]");
      ASSIGN_OR_RETURN(out->fl, Int32(value, "precision.fl", 0, what));
      if (out->fl > kMaxSpecFractionalBits) {
        return Invalid("precision.fl", absl::StrCat("expected ", what, ", got '", out->fl, "'"));
      }
      continue;
    }
    ASSIGN_OR_RETURN(NumberFormat f, Choice(value, KeyPath("precision", key), formats));
    (key == "wire" ? out->wire : key == "weights" ? out->weights : out->compute) = f;
  }
  return absl::OkStatus();
}

absl::Status ValidateName(const std::string& name) {
  if (name.empty()) return Invalid("name", "must not be empty");
  if (name.size() > 63) return Invalid("name", absl::StrCat("at most 63 characters, got ", name.size()));
  auto ok_char = [](char c) { return absl::ascii_isalnum(c) || c == '.' || c == '_' || c == '-'; };
  for (char c : name) {
    if (!ok_char(c) || !absl::ascii_isalnum(name[0])) {
      return Invalid("name", absl::StrCat("expected letters, digits, '.', '_' or '-' starting with a letter "
                                          "or digit, got ", Quoted(name)));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<JobSpec> ParseNode(const YAML::Node& root, const std::string& base_dir) {
  if (!root || root.IsNull()) return absl::InvalidArgumentError("empty job spec");
  ASSIGN_OR_RETURN(auto entries,
                   MapEntries(root, "", {"name", "model", "data", "servers", "learners", "protocol", "lr",
                                         "batch", "epochs", "seed", "target_accuracy", "slow_learners",
                                         "limit_train", "limit_test", "eval_every_seconds",
                                         "learner_timeout_seconds", "backend", "restart",
                                         "checkpoint", "precision", "tls", "bind"}));
  JobSpec spec;
  bool has_name = false, has_model = false;
  for (const auto& [key, value] : entries) {
    if (key == "name") {
      ASSIGN_OR_RETURN(spec.name, Scalar(value, key));
      has_name = true;
    } else if (key == "model") {
      ASSIGN_OR_RETURN(spec.model_path, ResolveExistingFile(value, key, base_dir));
      has_model = true;
    } else if (key == "data") {
      ASSIGN_OR_RETURN(spec.data_dir, ResolveDir(value, key, base_dir));
    } else if (key == "servers") {
      ASSIGN_OR_RETURN(spec.servers,
                       Int32(value, key, 1, absl::StrCat("an integer in [1, ", kMaxServers, "]"), kMaxServers));
    } else if (key == "learners") {
      ASSIGN_OR_RETURN(spec.learners,
                       Int32(value, key, 1, absl::StrCat("an integer in [1, ", kMaxLearners, "]"), kMaxLearners));
    } else if (key == "protocol") {
      ASSIGN_OR_RETURN(std::string text, Scalar(value, key));
      absl::StatusOr<Protocol> protocol = ParseProtocol(text);
      if (!protocol.ok()) return Invalid(key, protocol.status().message());
      spec.protocol = *protocol;
    } else if (key == "lr") {
      RETURN_IF_ERROR(ParseLr(value, &spec.lr));
    } else if (key == "batch") {
      ASSIGN_OR_RETURN(spec.batch, Int32(value, key, 1, absl::StrCat("an integer in [1, ", kMaxBatch, "]"), kMaxBatch));
    } else if (key == "epochs") {
      ASSIGN_OR_RETURN(spec.epochs, Number(value, key, [](double v) { return v > 0 && v <= kMaxEpochs; },
                                           absl::StrCat("a number in (0, ", kMaxEpochs, "]")));
    } else if (key == "seed") {
      ASSIGN_OR_RETURN(std::string text, Scalar(value, key));
      if (!absl::SimpleAtoi(text, &spec.seed)) {
        return Invalid(key, absl::StrCat("expected an integer in [0, 2^64), got ", Quoted(text)));
      }
    } else if (key == "target_accuracy") {
      ASSIGN_OR_RETURN(spec.target_accuracy, Number(value, key, [](double v) { return v > 0 && v <= 1; },
                                                    "a fraction in (0, 1]"));
    } else if (key == "slow_learners") {
      RETURN_IF_ERROR(ParseSlowLearners(value, &spec.slow_learners));
    } else if (key == "limit_train") {
      ASSIGN_OR_RETURN(spec.limit_train, Integer(value, key, 1, "an integer >= 1"));
    } else if (key == "limit_test") {
      ASSIGN_OR_RETURN(spec.limit_test, Integer(value, key, 1, "an integer >= 1"));
    } else if (key == "eval_every_seconds") {
      ASSIGN_OR_RETURN(spec.eval_every, Seconds(value, key));
    } else if (key == "learner_timeout_seconds") {
      ASSIGN_OR_RETURN(spec.learner_timeout, Seconds(value, key));
    } else if (key == "backend") {
      ASSIGN_OR_RETURN(spec.backend, Choice<BackendKind>(value, key, {{"local", BackendKind::kLocal},
                                                                      {"mpi", BackendKind::kMpi},
                                                                      {"slurm", BackendKind::kSlurm},
                                                                      {"kubernetes", BackendKind::kKubernetes}}));
    } else if (key == "restart") {
      RETURN_IF_ERROR(ParseRestart(value, &spec.restart));
    } else if (key == "checkpoint") {
      spec.checkpoint.emplace();
      RETURN_IF_ERROR(ParseCheckpoint(value, base_dir, &*spec.checkpoint));
    } else if (key == "precision") {
      RETURN_IF_ERROR(ParsePrecision(value, &spec.precision));
    } else if (key == "tls") {
      spec.tls.emplace();
      RETURN_IF_ERROR(ParseTls(value, base_dir, &*spec.tls));
    } else if (key == "bind") {
      ASSIGN_OR_RETURN(spec.bind, Choice<Binding>(value, key, {{"none", Binding::kNone},
                                                               {"cores", Binding::kCores}}));
    }
  }
  if (!has_name) return Invalid("name", "missing (every job needs a name)");
  if (!has_model) return Invalid("model", "missing (path to a model spec YAML)");
  RETURN_IF_ERROR(ValidateName(spec.name));

  // Checks across keys.
  std::set<int> slow_seen;
  for (size_t i = 0; i < spec.slow_learners.size(); ++i) {
    const SlowLearner& s = spec.slow_learners[i];
    std::string key = absl::StrCat("slow_learners[", i, "].learner");
    if (s.learner >= spec.learners) {
      return Invalid(key, absl::StrCat("learner ", s.learner, " does not exist (learners: ", spec.learners,
                                       ", indices 0..", spec.learners - 1, ")"));
    }
    if (!slow_seen.insert(s.learner).second) return Invalid(key, absl::StrCat("learner ", s.learner, " listed twice"));
  }
  if (spec.limit_train && *spec.limit_train < spec.learners) {
    return Invalid("limit_train", absl::StrCat("must be >= learners (", spec.learners,
                                               ") so that every learner gets data, got ", *spec.limit_train));
  }
  return spec;
}

}  // namespace

absl::StatusOr<Protocol> ParseProtocol(const std::string& text) {
  const std::string expected = "expected hardsync, softsync:n (n >= 1), async or ssp:s (s >= 0)";
  Protocol p;
  if (text == "hardsync") {
    p.kind = ProtocolKind::kHardSync;
    return p;
  }
  if (text == "async") {
    p.kind = ProtocolKind::kAsync;
    return p;
  }
  absl::string_view view(text);
  auto suffix_int = [&](absl::string_view prefix, int min, int* out) {
    if (view.substr(0, prefix.size()) != prefix) return false;
    int64_t v = 0;
    if (!absl::SimpleAtoi(view.substr(prefix.size()), &v) || v < min || v > std::numeric_limits<int>::max()) {
      return false;
    }
    *out = static_cast<int>(v);
    return true;
  };
  if (view.substr(0, 9) == "softsync:") {
    p.kind = ProtocolKind::kSoftSync;
    if (suffix_int("softsync:", 1, &p.softsync_n)) return p;
  } else if (view.substr(0, 4) == "ssp:") {
    p.kind = ProtocolKind::kSsp;
    if (suffix_int("ssp:", 0, &p.ssp_staleness)) return p;
  }
  return absl::InvalidArgumentError(absl::StrCat(expected, ", got ", Quoted(text)));
}

std::string ProtocolToString(const Protocol& protocol) {
  switch (protocol.kind) {
    case ProtocolKind::kHardSync: return "hardsync";
    case ProtocolKind::kSoftSync: return absl::StrCat("softsync:", protocol.softsync_n);
    case ProtocolKind::kAsync: return "async";
    case ProtocolKind::kSsp: return absl::StrCat("ssp:", protocol.ssp_staleness);
  }
  return "?";
}

const char* LrStalenessName(LrStaleness rule) { return rule == LrStaleness::kInverse ? "inverse" : "none"; }

std::optional<BackendKind> ParseBackendKind(const std::string& name) {
  for (BackendKind kind : {BackendKind::kLocal, BackendKind::kMpi, BackendKind::kSlurm, BackendKind::kKubernetes}) {
    if (name == BackendKindName(kind)) return kind;
  }
  return std::nullopt;
}

const char* BackendKindName(BackendKind kind) {
  switch (kind) {
    case BackendKind::kLocal: return "local";
    case BackendKind::kMpi: return "mpi";
    case BackendKind::kSlurm: return "slurm";
    case BackendKind::kKubernetes: return "kubernetes";
  }
  return "?";
}

const char* NumberFormatName(NumberFormat format) { return format == NumberFormat::kFixed16 ? "fixed16" : "fp32"; }

const char* BindingName(Binding binding) { return binding == Binding::kCores ? "cores" : "none"; }

namespace {

// The offset of the first byte that is not part of well-formed UTF-8, or npos. Protobuf's own
// check: a spec travels as a proto3 string (SubmitRequest.spec_yaml), which must pass it.
size_t FirstNonUtf8(std::string_view text) {
  const size_t valid = static_cast<size_t>(google::protobuf::internal::UTF8SpnStructurallyValid(
      google::protobuf::StringPiece(text.data(), text.size())));
  return valid == text.size() ? std::string_view::npos : valid;
}

}  // namespace

absl::StatusOr<JobSpec> ParseJobSpec(const std::string& yaml, const std::string& base_dir) {
  if (yaml.size() > kMaxJobSpecBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("the job spec is ", yaml.size(), " bytes, more than a job spec may be (", kMaxJobSpecBytes, ")"));
  }
  if (const size_t bad = FirstNonUtf8(yaml); bad != std::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat("the job spec is not UTF-8 text (byte ", bad, ")"));
  }
  try {
    ASSIGN_OR_RETURN(YAML::Node root, LoadSingleYamlDocument(yaml));
    return ParseNode(root, base_dir);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("invalid YAML: ", e.what()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("parsing the job spec failed: ", e.what()));
  }
}

absl::StatusOr<std::string> ReadJobSpecFile(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) return absl::InvalidArgumentError(absl::StrCat(path, ": is a directory, not a job spec"));
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open the job spec"));
  std::string text(kMaxJobSpecBytes + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  if (in.bad()) return absl::DataLossError(absl::StrCat(path, ": read failed"));
  text.resize(static_cast<size_t>(in.gcount()));
  if (text.size() > kMaxJobSpecBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": longer than a job spec may be (", kMaxJobSpecBytes, " bytes): is it the right file?"));
  }
  if (const size_t bad = FirstNonUtf8(text); bad != std::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not UTF-8 text (byte ", bad, "): is it the right file?"));
  }
  return text;
}

absl::StatusOr<JobSpec> LoadJobSpec(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadJobSpecFile(path));
  std::string base_dir = Absolute(fs::path(path)).parent_path().string();
  absl::StatusOr<JobSpec> spec = ParseJobSpec(text, base_dir);
  if (!spec.ok()) return absl::Status(spec.status().code(), absl::StrCat(path, ": ", spec.status().message()));
  return spec;
}

}  // namespace orrery::scheduler
