// Model-spec YAML parsing. The schema is documented in examples/models/README.md.
//
// Every error is InvalidArgument with a message that starts with the field's path
// ("layers[2].kernel: ...") and, where yaml-cpp knows it, ends with the line number. yaml-cpp
// throws on malformed input; every call into it happens inside ParseModelSpec's try block.
#include "learner/model_spec.h"

#include <yaml-cpp/yaml.h>

#include <array>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "base/quote.h"
#include "base/status_macros.h"
#include "base/yaml_document.h"

namespace orrery::learner {
namespace {

// Upper bound on any size field, so downstream shape arithmetic cannot overflow int.
constexpr int kMaxSize = 1 << 20;

struct KindEntry {
  const char* name;
  LayerKind kind;
};

constexpr std::array<KindEntry, 9> kKinds = {{
    {"conv", LayerKind::kConv},
    {"dense", LayerKind::kDense},
    {"relu", LayerKind::kRelu},
    {"relu6", LayerKind::kRelu6},
    {"maxpool", LayerKind::kMaxPool},
    {"avgpool", LayerKind::kAvgPool},
    {"global_avgpool", LayerKind::kGlobalAvgPool},
    {"flatten", LayerKind::kFlatten},
    {"add", LayerKind::kAdd},
}};

std::string KindList() {
  std::vector<std::string> names;
  for (const KindEntry& e : kKinds) names.push_back(e.name);
  return absl::StrJoin(names, ", ");
}

// " (line N)" for a node that came from text, "" otherwise.
std::string LineOf(const YAML::Node& node) {
  if (!node.IsDefined()) return "";  // a missing key's placeholder has no position
  const YAML::Mark mark = node.Mark();
  if (mark.is_null()) return "";
  return absl::StrCat(" (line ", mark.line + 1, ")");
}

absl::Status FieldError(absl::string_view path, absl::string_view what, const YAML::Node& node) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", what, LineOf(node)));
}

std::string Describe(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Null:
      return "nothing";
    case YAML::NodeType::Scalar:
      return Quoted(node.Scalar());
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Map:
      return "a map";
    default:
      return "an undefined value";
  }
}

// Reads an integer in [min_value, kMaxSize].
absl::StatusOr<int> ReadInt(const YAML::Node& node, const std::string& path, int min_value) {
  int64_t value = 0;
  if (!node.IsScalar() || !absl::SimpleAtoi(node.Scalar(), &value)) {
    return FieldError(path, absl::StrCat("expected an integer, got ", Describe(node)), node);
  }
  if (value < min_value) {
    return FieldError(path, absl::StrCat("must be >= ", min_value, ", got ", value), node);
  }
  if (value > kMaxSize) {
    return FieldError(path, absl::StrCat("must be <= ", kMaxSize, ", got ", value), node);
  }
  return static_cast<int>(value);
}

absl::StatusOr<bool> ReadBool(const YAML::Node& node, const std::string& path) {
  bool value = false;
  if (!node.IsScalar() || !YAML::convert<bool>::decode(node, value)) {
    return FieldError(path, absl::StrCat("expected true or false, got ", Describe(node)), node);
  }
  return value;
}

absl::StatusOr<std::string> ReadString(const YAML::Node& node, const std::string& path) {
  if (!node.IsScalar()) {
    return FieldError(path, absl::StrCat("expected a string, got ", Describe(node)), node);
  }
  return node.Scalar();
}

absl::StatusOr<Activation> ReadActivation(const YAML::Node& node, const std::string& path) {
  ASSIGN_OR_RETURN(std::string s, ReadString(node, path));
  if (s == "none" || s == "linear") return Activation::kNone;
  if (s == "relu") return Activation::kRelu;
  if (s == "relu6") return Activation::kRelu6;
  return FieldError(
      path, absl::StrCat("unknown activation '", s, "' (expected one of none, relu, relu6)"), node);
}

// Layer and model names become tensor-name prefixes ("conv1.weight"), so no dots or spaces.
absl::Status CheckName(const std::string& name, const std::string& path, const YAML::Node& node) {
  if (name.empty()) return FieldError(path, "must not be empty", node);
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '-';
    if (!ok) {
      return FieldError(
          path, absl::StrCat("'", name, "' may use only letters, digits, '_' and '-'"), node);
    }
  }
  return absl::OkStatus();
}

// Checks that `map` is a map whose keys are unique scalars drawn from `allowed`.
absl::Status CheckKeys(const YAML::Node& map, const std::string& path,
                       const std::vector<absl::string_view>& allowed) {
  absl::flat_hash_set<std::string> seen;
  for (const auto& entry : map) {
    const YAML::Node& key = entry.first;
    if (!key.IsScalar()) return FieldError(path, "keys must be plain strings", key);
    const std::string& k = key.Scalar();
    const std::string key_path = path.empty() ? k : absl::StrCat(path, ".", k);
    bool known = false;
    for (absl::string_view a : allowed) known = known || a == k;
    if (!known) {
      return FieldError(key_path,
                        absl::StrCat("unknown key (expected one of ", absl::StrJoin(allowed, ", "),
                                     ")"),
                        key);
    }
    if (!seen.insert(k).second) return FieldError(key_path, "duplicate key", key);
  }
  return absl::OkStatus();
}

std::vector<absl::string_view> AllowedKeys(LayerKind kind) {
  std::vector<absl::string_view> keys = {"name", "type", "inputs"};
  switch (kind) {
    case LayerKind::kConv:
      keys.insert(keys.end(),
                  {"filters", "kernel", "stride", "padding", "groups", "bias", "activation"});
      break;
    case LayerKind::kDense:
      keys.insert(keys.end(), {"units", "bias", "activation"});
      break;
    case LayerKind::kMaxPool:
    case LayerKind::kAvgPool:
      keys.insert(keys.end(), {"kernel", "stride", "padding"});
      break;
    default:
      break;
  }
  return keys;
}

// Reads map[key] into *out when present; `required` makes absence an error.
absl::Status ReadIntField(const YAML::Node& map, const char* key, const std::string& path,
                          int min_value, bool required, int* out) {
  const YAML::Node node = map[key];
  const std::string field = absl::StrCat(path, ".", key);
  if (!node) {
    if (required) return FieldError(field, "missing", map);
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(*out, ReadInt(node, field, min_value));
  return absl::OkStatus();
}

absl::StatusOr<LayerSpec> ParseLayer(const YAML::Node& node, int index,
                                     const absl::flat_hash_set<std::string>& earlier) {
  const std::string path = absl::StrCat("layers[", index, "]");
  if (!node.IsMap()) {
    return FieldError(path, absl::StrCat("expected a map with a 'type', got ", Describe(node)),
                      node);
  }
  LayerSpec layer;
  const YAML::Node type_node = node["type"];
  if (!type_node) return FieldError(path + ".type", "missing", node);
  ASSIGN_OR_RETURN(std::string type, ReadString(type_node, path + ".type"));
  bool found = false;
  for (const KindEntry& e : kKinds) {
    if (type == e.name) {
      layer.kind = e.kind;
      found = true;
    }
  }
  if (!found) {
    return FieldError(path + ".type",
                      absl::StrCat("unknown layer type '", type, "' (expected one of ",
                                   KindList(), ")"),
                      type_node);
  }
  RETURN_IF_ERROR(CheckKeys(node, path, AllowedKeys(layer.kind)));

  if (const YAML::Node name_node = node["name"]) {
    ASSIGN_OR_RETURN(layer.name, ReadString(name_node, path + ".name"));
    RETURN_IF_ERROR(CheckName(layer.name, path + ".name", name_node));
    if (layer.name == "input") {
      return FieldError(path + ".name", "'input' is reserved for the model's input", name_node);
    }
    if (earlier.contains(layer.name)) {
      return FieldError(path + ".name",
                        absl::StrCat("duplicate layer name '", layer.name, "'"), name_node);
    }
  } else {
    layer.name = absl::StrCat(type, index);
    if (earlier.contains(layer.name)) {
      return FieldError(path + ".name",
                        absl::StrCat("default name '", layer.name,
                                     "' is already taken by an earlier layer; give this one a name"),
                        node);
    }
  }

  if (const YAML::Node inputs = node["inputs"]) {
    if (!inputs.IsSequence()) {
      return FieldError(path + ".inputs",
                        absl::StrCat("expected a list of layer names, got ", Describe(inputs)),
                        inputs);
    }
    for (size_t i = 0; i < inputs.size(); ++i) {
      const std::string item_path = absl::StrCat(path, ".inputs[", i, "]");
      ASSIGN_OR_RETURN(std::string in, ReadString(inputs[i], item_path));
      if (in != "input" && !earlier.contains(in)) {
        return FieldError(item_path,
                          absl::StrCat("'", in,
                                       "' is not 'input' or the name of an earlier layer"),
                          inputs[i]);
      }
      layer.inputs.push_back(std::move(in));
    }
  }
  const size_t want_inputs = layer.kind == LayerKind::kAdd ? 2 : 1;
  if (layer.kind == LayerKind::kAdd && layer.inputs.size() != 2) {
    return FieldError(path + ".inputs",
                      absl::StrCat("an add layer needs exactly 2 inputs, got ",
                                   layer.inputs.size()),
                      node["inputs"] ? node["inputs"] : node);
  }
  if (layer.inputs.size() > want_inputs) {
    return FieldError(path + ".inputs",
                      absl::StrCat("a ", type, " layer takes one input, got ",
                                   layer.inputs.size()),
                      node["inputs"]);
  }

  switch (layer.kind) {
    case LayerKind::kConv: {
      RETURN_IF_ERROR(ReadIntField(node, "filters", path, 1, true, &layer.filters));
      RETURN_IF_ERROR(ReadIntField(node, "kernel", path, 1, true, &layer.kernel));
      RETURN_IF_ERROR(ReadIntField(node, "stride", path, 1, false, &layer.stride));
      RETURN_IF_ERROR(ReadIntField(node, "padding", path, 0, false, &layer.padding));
      RETURN_IF_ERROR(ReadIntField(node, "groups", path, 1, false, &layer.groups));
      if (layer.filters % layer.groups != 0) {
        return FieldError(path + ".groups",
                          absl::StrCat("filters (", layer.filters, ") must be a multiple of groups (",
                                       layer.groups, ")"),
                          node["groups"]);
      }
      break;
    }
    case LayerKind::kDense:
      RETURN_IF_ERROR(ReadIntField(node, "units", path, 1, true, &layer.units));
      break;
    case LayerKind::kMaxPool:
    case LayerKind::kAvgPool: {
      RETURN_IF_ERROR(ReadIntField(node, "kernel", path, 1, true, &layer.kernel));
      layer.stride = layer.kernel;
      RETURN_IF_ERROR(ReadIntField(node, "stride", path, 1, false, &layer.stride));
      RETURN_IF_ERROR(ReadIntField(node, "padding", path, 0, false, &layer.padding));
      if (layer.padding >= layer.kernel) {
        // A window made only of padding has no value to pool.
        return FieldError(path + ".padding",
                          absl::StrCat("must be less than kernel (", layer.kernel, "), got ",
                                       layer.padding),
                          node["padding"]);
      }
      break;
    }
    default:
      break;
  }
  if (layer.kind == LayerKind::kConv || layer.kind == LayerKind::kDense) {
    if (const YAML::Node b = node["bias"]) {
      ASSIGN_OR_RETURN(layer.bias, ReadBool(b, path + ".bias"));
    }
    if (const YAML::Node a = node["activation"]) {
      ASSIGN_OR_RETURN(layer.activation, ReadActivation(a, path + ".activation"));
    }
  }
  return layer;
}

absl::StatusOr<ModelSpec> ParseRoot(const YAML::Node& root) {
  if (!root || root.IsNull()) {
    return absl::InvalidArgumentError("model spec is empty (expected a map with 'layers')");
  }
  if (!root.IsMap()) {
    return FieldError("model spec", absl::StrCat("expected a map, got ", Describe(root)), root);
  }
  RETURN_IF_ERROR(CheckKeys(root, "", {"name", "input", "classes", "layers"}));
  ModelSpec spec;
  spec.name = "model";
  if (const YAML::Node n = root["name"]) {
    ASSIGN_OR_RETURN(spec.name, ReadString(n, "name"));
    RETURN_IF_ERROR(CheckName(spec.name, "name", n));
  }
  if (const YAML::Node in = root["input"]) {
    if (!in.IsMap()) {
      return FieldError("input",
                        absl::StrCat("expected a map {channels, height, width}, got ",
                                     Describe(in)),
                        in);
    }
    RETURN_IF_ERROR(CheckKeys(in, "input", {"channels", "height", "width"}));
    RETURN_IF_ERROR(ReadIntField(in, "channels", "input", 1, false, &spec.input_channels));
    RETURN_IF_ERROR(ReadIntField(in, "height", "input", 1, false, &spec.input_height));
    RETURN_IF_ERROR(ReadIntField(in, "width", "input", 1, false, &spec.input_width));
  }
  if (const YAML::Node c = root["classes"]) {
    ASSIGN_OR_RETURN(spec.classes, ReadInt(c, "classes", 2));
  }
  const YAML::Node layers = root["layers"];
  if (!layers) return FieldError("layers", "missing", root);
  if (!layers.IsSequence()) {
    return FieldError("layers", absl::StrCat("expected a list of layers, got ", Describe(layers)),
                      layers);
  }
  if (layers.size() == 0) return FieldError("layers", "must list at least one layer", layers);
  absl::flat_hash_set<std::string> earlier;
  for (size_t i = 0; i < layers.size(); ++i) {
    ASSIGN_OR_RETURN(LayerSpec layer, ParseLayer(layers[i], static_cast<int>(i), earlier));
    earlier.insert(layer.name);
    spec.layers.push_back(std::move(layer));
  }
  return spec;
}

}  // namespace

const char* LayerKindName(LayerKind kind) {
  for (const KindEntry& e : kKinds) {
    if (e.kind == kind) return e.name;
  }
  return "unknown";
}

absl::StatusOr<ModelSpec> ParseModelSpec(const std::string& yaml_text) {
  try {
    ASSIGN_OR_RETURN(YAML::Node root, LoadSingleYamlDocument(yaml_text));
    return ParseRoot(root);
  } catch (const YAML::ParserException& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("YAML syntax error at line ", e.mark.line + 1, ", column ",
                     e.mark.column + 1, ": ", e.msg));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("cannot read YAML: ", e.what()));
  }
}

absl::StatusOr<ModelSpec> LoadModelSpec(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": is a directory, not a model spec"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open model spec"));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return absl::UnavailableError(absl::StrCat(path, ": read failed"));
  absl::StatusOr<ModelSpec> spec = ParseModelSpec(text.str());
  if (!spec.ok()) {
    return absl::Status(spec.status().code(), absl::StrCat(path, ": ", spec.status().message()));
  }
  return spec;
}

}  // namespace orrery::learner
