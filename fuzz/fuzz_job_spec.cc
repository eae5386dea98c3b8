// Job-spec YAML from a user: any bytes must give a spec or an INVALID_ARGUMENT, never a crash.
#include <cstddef>
#include <cstdint>
#include <string>

#include "scheduler/job_spec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string yaml(reinterpret_cast<const char*>(data), size);
  // Relative `model` paths resolve against examples/jobs, so valid specs are reachable.
  absl::StatusOr<orrery::scheduler::JobSpec> spec =
      orrery::scheduler::ParseJobSpec(yaml, ORRERY_SOURCE_DIR "/examples/jobs");
  if (spec.ok()) {
    // Whatever parses must satisfy the documented invariants.
    if (spec->servers < 1 || spec->learners < 1 || spec->batch < 1 || !(spec->epochs > 0)) __builtin_trap();
    (void)orrery::scheduler::ProtocolToString(spec->protocol);
  } else if (spec.status().code() != absl::StatusCode::kInvalidArgument &&
             spec.status().code() != absl::StatusCode::kNotFound) {
    __builtin_trap();
  }
  return 0;
}
