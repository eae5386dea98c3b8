// A shard store's pull answer as the PullResponse a learner receives (its payloads copied in),
// for the server tests.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "parameter_server.pb.h"
#include "server/shard_store.h"

namespace orrery::server::testing {

inline absl::Status FillPull(const ShardStore& store, proto::Encoding encoding,
                             proto::PullResponse* out, uint32_t part = 0, uint32_t parts = 1) {
  absl::StatusOr<PullAnswer> answer = store.AnswerPull(encoding, part, parts);
  if (!answer.ok()) return answer.status();
  *out = answer->Materialize();
  return absl::OkStatus();
}

}  // namespace orrery::server::testing
