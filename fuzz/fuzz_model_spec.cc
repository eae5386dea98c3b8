// Model-spec YAML: any bytes must give a spec or an error naming the problem, never a crash.
#include <cstddef>
#include <cstdint>
#include <string>

#include "learner/model_spec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string yaml(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<orrery::learner::ModelSpec> spec = orrery::learner::ParseModelSpec(yaml);
  if (!spec.ok() && spec.status().message().empty()) __builtin_trap();  // errors must say why
  return 0;
}
