// Loading a YAML text that must hold exactly one document (job and model specs).
//
// Not YAML::LoadAll: yaml-cpp 0.7 (Debian 12) can return an endless stream of empty documents
// for some malformed inputs (found by fuzz/fuzz_model_spec), so LoadAll never returns. Here the
// document count is taken with a bounded number of HandleNextDocument calls.
#pragma once

#include <sstream>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "yaml-cpp/eventhandler.h"
#include "yaml-cpp/yaml.h"

namespace orrery {

namespace yaml_internal {
// Ignores every event: only the document boundaries matter.
class IgnoreEvents final : public YAML::EventHandler {
 public:
  void OnDocumentStart(const YAML::Mark&) override {}
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t, const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}
};
}  // namespace yaml_internal

// The text's only document (a null node for an empty text). Errors: INVALID_ARGUMENT for a syntax
// error ("YAML syntax error at line L, column C: ...") or more than one document. Never throws.
inline absl::StatusOr<YAML::Node> LoadSingleYamlDocument(const std::string& text) {
  try {
    std::istringstream in(text);
    YAML::Parser parser(in);
    yaml_internal::IgnoreEvents ignore;
    int documents = 0;
    while (documents < 2 && parser.HandleNextDocument(ignore)) ++documents;
    if (documents > 1) {
      return absl::InvalidArgumentError("expected one YAML document, found several (remove the '---' separators)");
    }
    return YAML::Load(text);
  } catch (const YAML::ParserException& e) {
    return absl::InvalidArgumentError(absl::StrCat("YAML syntax error at line ", e.mark.line + 1,
                                                   ", column ", e.mark.column + 1, ": ", e.msg));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("cannot read YAML: ", e.what()));
  }
}

}  // namespace orrery
