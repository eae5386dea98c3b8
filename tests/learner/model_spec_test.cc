#include "learner/model_spec.h"

#include "learner/model.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <string>

namespace orrery::learner {
namespace {

using ::testing::HasSubstr;

std::string ExamplePath(const std::string& file) {
  return std::string(ORRERY_SOURCE_DIR) + "/examples/models/" + file;
}

// Parses `yaml`, expects InvalidArgument, and returns the message.
std::string ErrorOf(const std::string& yaml) {
  absl::StatusOr<ModelSpec> spec = ParseModelSpec(yaml);
  EXPECT_FALSE(spec.ok()) << "accepted:\n" << yaml;
  if (spec.ok()) return "";
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument) << spec.status();
  return std::string(spec.status().message());
}

TEST(ModelSpecExamples, MlpParses) {
  absl::StatusOr<ModelSpec> spec = LoadModelSpec(ExamplePath("mlp.yaml"));
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->name, "mlp");
  EXPECT_EQ(spec->input_channels, 1);
  EXPECT_EQ(spec->input_height, 28);
  EXPECT_EQ(spec->input_width, 28);
  EXPECT_EQ(spec->classes, 10);
  ASSERT_EQ(spec->layers.size(), 4u);
  EXPECT_EQ(spec->layers[0].kind, LayerKind::kFlatten);
  EXPECT_EQ(spec->layers[1].kind, LayerKind::kDense);
  EXPECT_EQ(spec->layers[1].units, 256);
  EXPECT_EQ(spec->layers[1].activation, Activation::kRelu);
  EXPECT_EQ(spec->layers[2].units, 128);
  EXPECT_EQ(spec->layers[3].units, 10);
  EXPECT_EQ(spec->layers[3].activation, Activation::kNone);
  EXPECT_TRUE(spec->layers[3].bias);
}

TEST(ModelSpecExamples, CnnParses) {
  absl::StatusOr<ModelSpec> spec = LoadModelSpec(ExamplePath("cnn.yaml"));
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->name, "cnn");
  int convs = 0;
  int pools = 0;
  for (const LayerSpec& l : spec->layers) {
    if (l.kind == LayerKind::kConv) {
      ++convs;
      EXPECT_EQ(l.kernel, 5) << l.name;
      EXPECT_EQ(l.padding, 2) << l.name;
      EXPECT_EQ(l.activation, Activation::kRelu) << l.name;
    }
    if (l.kind == LayerKind::kMaxPool) {
      ++pools;
      EXPECT_EQ(l.kernel, 2) << l.name;
      EXPECT_EQ(l.stride, 2) << l.name << ": pool stride defaults to kernel";
    }
  }
  EXPECT_EQ(convs, 2);
  EXPECT_EQ(pools, 2);
  EXPECT_EQ(spec->layers.back().kind, LayerKind::kDense);
  EXPECT_EQ(spec->layers.back().units, 10);
}

TEST(ModelSpecExamples, MobileHasDepthwiseBottleneckAndResidual) {
  absl::StatusOr<ModelSpec> spec = LoadModelSpec(ExamplePath("mobile.yaml"));
  ASSERT_TRUE(spec.ok()) << spec.status();
  bool depthwise = false;
  bool relu6 = false;
  bool linear_projection = false;
  bool global_pool = false;
  const LayerSpec* add = nullptr;
  for (const LayerSpec& l : spec->layers) {
    if (l.kind == LayerKind::kConv && l.groups > 1 && l.groups == l.filters) depthwise = true;
    if (l.activation == Activation::kRelu6) relu6 = true;
    if (l.kind == LayerKind::kConv && l.kernel == 1 && l.activation == Activation::kNone) {
      linear_projection = true;
    }
    if (l.kind == LayerKind::kGlobalAvgPool) global_pool = true;
    if (l.kind == LayerKind::kAdd) add = &l;
  }
  EXPECT_TRUE(depthwise);
  EXPECT_TRUE(relu6);
  EXPECT_TRUE(linear_projection);
  EXPECT_TRUE(global_pool);
  ASSERT_NE(add, nullptr);
  EXPECT_THAT(add->inputs, ::testing::ElementsAre("pw1", "project"));
  EXPECT_EQ(spec->layers.back().units, 10);
}

// "Each valid example builds": the parsed spec passes Model::Create's shape-chain checks and
// produces `classes` logits.
TEST(ModelSpecExamples, EveryExampleBuildsAModel) {
  for (const char* file : {"mlp.yaml", "cnn.yaml", "mobile.yaml"}) {
    absl::StatusOr<ModelSpec> spec = LoadModelSpec(ExamplePath(file));
    ASSERT_TRUE(spec.ok()) << spec.status();
    absl::StatusOr<std::unique_ptr<Model>> model = Model::Create(*spec, 1);
    ASSERT_TRUE(model.ok()) << file << ": " << model.status();
    EXPECT_EQ((*model)->input_size(), 28 * 28) << file;
  }
}

TEST(ModelSpecParse, DefaultsApply) {
  absl::StatusOr<ModelSpec> spec = ParseModelSpec(R"(
layers:
  - type: conv
    filters: 8
    kernel: 3
  - type: avgpool
    kernel: 3
  - type: relu
  - type: dense
    units: 10
    bias: false
)");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->name, "model");
  EXPECT_EQ(spec->input_channels, 1);
  EXPECT_EQ(spec->input_height, 28);
  EXPECT_EQ(spec->input_width, 28);
  EXPECT_EQ(spec->classes, 10);
  ASSERT_EQ(spec->layers.size(), 4u);
  EXPECT_EQ(spec->layers[0].name, "conv0");
  EXPECT_EQ(spec->layers[0].stride, 1);
  EXPECT_EQ(spec->layers[0].padding, 0);
  EXPECT_EQ(spec->layers[0].groups, 1);
  EXPECT_TRUE(spec->layers[0].bias);
  EXPECT_EQ(spec->layers[0].activation, Activation::kNone);
  EXPECT_TRUE(spec->layers[0].inputs.empty());
  EXPECT_EQ(spec->layers[1].name, "avgpool1");
  EXPECT_EQ(spec->layers[1].stride, 3);
  EXPECT_EQ(spec->layers[2].name, "relu2");
  EXPECT_EQ(spec->layers[3].name, "dense3");
  EXPECT_FALSE(spec->layers[3].bias);
}

TEST(ModelSpecParse, ExplicitInputsAndTopLevelFields) {
  absl::StatusOr<ModelSpec> spec = ParseModelSpec(R"(
name: tiny
input: {channels: 3, height: 32, width: 16}
classes: 4
layers:
  - {name: a, type: conv, filters: 3, kernel: 3, padding: 1, groups: 3, activation: relu6}
  - {name: b, type: add, inputs: [input, a]}
  - {type: global_avgpool, inputs: [b]}
  - {type: dense, units: 4, activation: linear}
)");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->name, "tiny");
  EXPECT_EQ(spec->input_channels, 3);
  EXPECT_EQ(spec->input_height, 32);
  EXPECT_EQ(spec->input_width, 16);
  EXPECT_EQ(spec->classes, 4);
  EXPECT_EQ(spec->layers[0].groups, 3);
  EXPECT_EQ(spec->layers[0].activation, Activation::kRelu6);
  EXPECT_THAT(spec->layers[1].inputs, ::testing::ElementsAre("input", "a"));
  EXPECT_THAT(spec->layers[2].inputs, ::testing::ElementsAre("b"));
  EXPECT_EQ(spec->layers[2].name, "global_avgpool2");
}

TEST(ModelSpecParse, LayerKindNamesMatchYamlTypes) {
  EXPECT_STREQ(LayerKindName(LayerKind::kConv), "conv");
  EXPECT_STREQ(LayerKindName(LayerKind::kDense), "dense");
  EXPECT_STREQ(LayerKindName(LayerKind::kRelu), "relu");
  EXPECT_STREQ(LayerKindName(LayerKind::kRelu6), "relu6");
  EXPECT_STREQ(LayerKindName(LayerKind::kMaxPool), "maxpool");
  EXPECT_STREQ(LayerKindName(LayerKind::kAvgPool), "avgpool");
  EXPECT_STREQ(LayerKindName(LayerKind::kGlobalAvgPool), "global_avgpool");
  EXPECT_STREQ(LayerKindName(LayerKind::kFlatten), "flatten");
  EXPECT_STREQ(LayerKindName(LayerKind::kAdd), "add");
}

TEST(ModelSpecErrors, UnknownLayerTypeNamesFieldAndChoices) {
  const std::string msg = ErrorOf(R"(
layers:
  - {type: flatten}
  - {type: dense, units: 10}
  - {type: convv, filters: 3, kernel: 3}
)");
  EXPECT_THAT(msg, HasSubstr("layers[2].type: unknown layer type 'convv' (expected one of conv,"));
  EXPECT_THAT(msg, HasSubstr("global_avgpool"));
  EXPECT_THAT(msg, HasSubstr("(line 5)"));
}

TEST(ModelSpecErrors, MissingTypeIsNamed) {
  EXPECT_THAT(ErrorOf("layers:\n  - {units: 10}\n"), HasSubstr("layers[0].type: missing"));
}

TEST(ModelSpecErrors, MissingRequiredFieldIsNamed) {
  EXPECT_THAT(ErrorOf("layers:\n  - {type: conv, kernel: 3}\n"),
              HasSubstr("layers[0].filters: missing"));
  EXPECT_THAT(ErrorOf("layers:\n  - {type: conv, filters: 3}\n"),
              HasSubstr("layers[0].kernel: missing"));
  EXPECT_THAT(ErrorOf("layers:\n  - {type: flatten}\n  - {type: dense}\n"),
              HasSubstr("layers[1].units: missing"));
  EXPECT_THAT(ErrorOf("layers:\n  - {type: maxpool, stride: 2}\n"),
              HasSubstr("layers[0].kernel: missing"));
}

TEST(ModelSpecErrors, BadValuesAreNamed) {
  EXPECT_THAT(ErrorOf("layers:\n  - {type: conv, filters: 3, kernel: -3}\n"),
              HasSubstr("layers[0].kernel: must be >= 1, got -3"));
  EXPECT_THAT(ErrorOf("layers:\n  - {type: conv, filters: 3, kernel: 3, groups: 0}\n"),
              HasSubstr("layers[0].groups: must be >= 1, got 0"));
  EXPECT_THAT(ErrorOf("layers:\n  - {type: conv, filters: 3, kernel: 3, padding: -1}\n"),
              HasSubstr("layers[0].padding: must be >= 0"));
  EXPECT_THAT(ErrorOf("layers:\n  - {type: conv, filters: 3, kernel: 3, stride: 0}\n"),
              HasSubstr("layers[0].stride: must be >= 1"));
  EXPECT_THAT(ErrorOf("layers:\n  - {type: dense, units: 2.5}\n"),
              HasSubstr("layers[0].units: expected an integer, got '2.5'"));
  EXPECT_THAT(ErrorOf("layers:\n  - {type: dense, units: many}\n"),
              HasSubstr("layers[0].units: expected an integer, got 'many'"));
  EXPECT_THAT(ErrorOf("layers:\n  - {type: dense, units: [1, 2]}\n"),
              HasSubstr("layers[0].units: expected an integer, got a list"));
  EXPECT_THAT(ErrorOf("layers:\n  - {type: dense, units: 99999999999}\n"),
              HasSubstr("layers[0].units: must be <= "));
  EXPECT_THAT(ErrorOf("layers:\n  - {type: dense, units: 10, bias: maybe}\n"),
              HasSubstr("layers[0].bias: expected true or false, got 'maybe'"));
  EXPECT_THAT(ErrorOf("layers:\n  - {type: dense, units: 10, activation: tanh}\n"),
              HasSubstr("layers[0].activation: unknown activation 'tanh'"));
  EXPECT_THAT(ErrorOf("layers:\n  - {type: conv, filters: 6, kernel: 3, groups: 4}\n"),
              HasSubstr("layers[0].groups: filters (6) must be a multiple of groups (4)"));
  EXPECT_THAT(ErrorOf("layers:\n  - {type: maxpool, kernel: 2, padding: 2}\n"),
              HasSubstr("layers[0].padding: must be less than kernel (2)"));
  EXPECT_THAT(ErrorOf("input: {channels: 0}\nlayers:\n  - {type: flatten}\n"),
              HasSubstr("input.channels: must be >= 1, got 0"));
  EXPECT_THAT(ErrorOf("classes: 1\nlayers:\n  - {type: flatten}\n"),
              HasSubstr("classes: must be >= 2, got 1"));
}

TEST(ModelSpecErrors, UnknownKeysAreNamed) {
  EXPECT_THAT(ErrorOf("layers:\n  - {type: flatten}\n  - {type: maxpool, kernal: 2}\n"),
              HasSubstr("layers[1].kernal: unknown key"));
  // A field that exists for another layer type is still unknown here.
  EXPECT_THAT(ErrorOf("layers:\n  - {type: dense, units: 10, groups: 2}\n"),
              HasSubstr("layers[0].groups: unknown key"));
  EXPECT_THAT(ErrorOf("layrs:\n  - {type: flatten}\n"), HasSubstr("layrs: unknown key"));
  EXPECT_THAT(ErrorOf("input: {channels: 1, depth: 3}\nlayers:\n  - {type: flatten}\n"),
              HasSubstr("input.depth: unknown key"));
}

TEST(ModelSpecErrors, DuplicateKeyIsRejected) {
  EXPECT_THAT(ErrorOf("layers:\n  - {type: dense, units: 10, units: 20}\n"),
              HasSubstr("layers[0].units: duplicate key"));
}

TEST(ModelSpecErrors, DuplicateLayerNamesAreRejected) {
  EXPECT_THAT(ErrorOf(R"(
layers:
  - {name: fc, type: flatten}
  - {name: fc, type: dense, units: 10}
)"),
              HasSubstr("layers[1].name: duplicate layer name 'fc'"));
  // An explicit name that collides with a later default name.
  EXPECT_THAT(ErrorOf(R"(
layers:
  - {name: relu1, type: flatten}
  - {type: relu}
)"),
              HasSubstr("layers[1].name: default name 'relu1' is already taken"));
}

TEST(ModelSpecErrors, BadLayerNamesAreRejected) {
  EXPECT_THAT(ErrorOf("layers:\n  - {name: input, type: flatten}\n"),
              HasSubstr("layers[0].name: 'input' is reserved"));
  EXPECT_THAT(ErrorOf("layers:\n  - {name: a.b, type: flatten}\n"),
              HasSubstr("layers[0].name: 'a.b' may use only"));
}

TEST(ModelSpecErrors, InputsMustNameEarlierLayers) {
  EXPECT_THAT(ErrorOf(R"(
layers:
  - {name: a, type: flatten}
  - {name: b, type: dense, units: 10, inputs: [c]}
  - {name: c, type: dense, units: 10}
)"),
              HasSubstr("layers[1].inputs[0]: 'c' is not 'input' or the name of an earlier layer"));
  EXPECT_THAT(ErrorOf("layers:\n  - {name: a, type: relu, inputs: [a]}\n"),
              HasSubstr("layers[0].inputs[0]: 'a' is not"));
  EXPECT_THAT(ErrorOf("layers:\n  - {type: relu, inputs: input}\n"),
              HasSubstr("layers[0].inputs: expected a list of layer names"));
  EXPECT_THAT(ErrorOf("layers:\n  - {name: a, type: relu}\n  - {type: relu, inputs: [a, input]}\n"),
              HasSubstr("layers[1].inputs: a relu layer takes one input, got 2"));
}

TEST(ModelSpecErrors, AddNeedsExactlyTwoInputs) {
  EXPECT_THAT(ErrorOf("layers:\n  - {name: a, type: relu}\n  - {type: add}\n"),
              HasSubstr("layers[1].inputs: an add layer needs exactly 2 inputs, got 0"));
  EXPECT_THAT(ErrorOf("layers:\n  - {name: a, type: relu}\n  - {type: add, inputs: [a]}\n"),
              HasSubstr("layers[1].inputs: an add layer needs exactly 2 inputs, got 1"));
  EXPECT_THAT(
      ErrorOf("layers:\n  - {name: a, type: relu}\n  - {type: add, inputs: [a, a, input]}\n"),
      HasSubstr("got 3"));
}

TEST(ModelSpecErrors, LayersMustBeANonEmptyList) {
  EXPECT_THAT(ErrorOf("name: x\n"), HasSubstr("layers: missing"));
  EXPECT_THAT(ErrorOf("layers: []\n"), HasSubstr("layers: must list at least one layer"));
  EXPECT_THAT(ErrorOf("layers: {type: relu}\n"), HasSubstr("layers: expected a list"));
  EXPECT_THAT(ErrorOf("layers:\n  - relu\n"), HasSubstr("layers[0]: expected a map"));
  EXPECT_THAT(ErrorOf(""), HasSubstr("model spec is empty"));
  EXPECT_THAT(ErrorOf("- 1\n- 2\n"), HasSubstr("model spec: expected a map"));
}

TEST(ModelSpecErrors, SyntaxErrorGivesLine) {
  const std::string msg = ErrorOf("name: x\nlayers:\n  - {type: conv, filters: 3\n  - {}\n");
  EXPECT_THAT(msg, HasSubstr("YAML syntax error at line"));
  const std::string msg2 = ErrorOf("name: x\nlayers:\n  - type: relu\n   bad: [\n");
  EXPECT_THAT(msg2, HasSubstr("YAML syntax error at line"));
}

TEST(ModelSpecLoad, MissingFileIsNotFound) {
  absl::StatusOr<ModelSpec> spec = LoadModelSpec("/nonexistent/spec.yaml");
  ASSERT_FALSE(spec.ok());
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(spec.status().message(), HasSubstr("/nonexistent/spec.yaml"));
}

TEST(ModelSpecLoad, ParseErrorsNameTheFile) {
  const std::string path = ::testing::TempDir() + "/model_spec_test_bad.yaml";
  {
    std::ofstream out(path);
    out << "name: bad\nlayers:\n  - {type: dense, units: 10, activation: sigmoid}\n";
  }
  absl::StatusOr<ModelSpec> spec = LoadModelSpec(path);
  std::remove(path.c_str());
  ASSERT_FALSE(spec.ok());
  EXPECT_THAT(spec.status().message(),
              HasSubstr(path + ": layers[0].activation: unknown activation 'sigmoid'"));
  EXPECT_THAT(spec.status().message(), HasSubstr("(line 3)"));
}

TEST(ModelSpecLoad, DirectoryIsRejected) {
  absl::StatusOr<ModelSpec> spec = LoadModelSpec(ExamplePath(""));
  ASSERT_FALSE(spec.ok());
  EXPECT_THAT(spec.status().message(), HasSubstr("is a directory"));
}

}  // namespace
}  // namespace orrery::learner

namespace orrery::learner {
namespace {

// Found by fuzz/fuzz_model_spec: yaml-cpp's LoadAll returns endless empty documents for this
// input, so the parser hung. It must now answer, with an error.
TEST(ModelSpecRegressionTest, MalformedTextWithEndlessDocumentsIsRefused) {
  std::ifstream in(std::string(ORRERY_SOURCE_DIR) + "/fuzz/regressions/yaml_endless_documents.yaml");
  ASSERT_TRUE(in) << "missing regression input";
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  absl::StatusOr<ModelSpec> spec = ParseModelSpec(text);
  ASSERT_FALSE(spec.ok());
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ModelSpecRegressionTest, SeveralDocumentsAreRefused) {
  absl::StatusOr<ModelSpec> spec = ParseModelSpec("layers: [{type: flatten}]\n---\nlayers: []\n");
  ASSERT_FALSE(spec.ok());
  EXPECT_NE(spec.status().message().find("one YAML document"), std::string_view::npos) << spec.status();
}

}  // namespace
}  // namespace orrery::learner
