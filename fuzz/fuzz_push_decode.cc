// A PushRequest as a shard's push stream reads it (server/push_decoder.h), the bytes cut into
// pieces as gRPC slices would cut them: any bytes must be refused exactly when protobuf refuses
// them, and when accepted give protobuf's message, the gradients' bytes left in the pieces; the
// payload functions then read only inside the pieces.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "google/protobuf/stubs/logging.h"
#include "parameter_server.pb.h"
#include "server/push_decoder.h"
#include "server/tensor_codec.h"
#include "tests/server/pieces_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Protobuf logs each string that is not UTF-8; the verdict is what is checked here.
  static const bool quiet = (google::protobuf::SetLogHandler(nullptr), true);
  (void)quiet;
  if (size < 1) return 0;
  // The first byte chooses the cuts: every (k + 1)-th byte starts a new piece, k in [0, 255].
  const size_t every = static_cast<size_t>(data[0]) + 1;
  const std::string bytes(reinterpret_cast<const char*>(data) + 1, size - 1);
  std::vector<absl::string_view> pieces;
  for (size_t at = 0; at < bytes.size(); at += every) {
    pieces.push_back(absl::string_view(bytes).substr(at, every));
  }
  orrery::proto::PushRequest reference;
  const bool parsed = reference.ParseFromString(bytes);
  absl::StatusOr<orrery::server::ReceivedPush> push =
      orrery::server::testing::DecodePieces(pieces);
  if (push.ok() != parsed) abort();
  if (!parsed) return 0;
  if (push->Materialize().SerializeAsString() != reference.SerializeAsString()) abort();
  for (int i = 0; i < push->request.chunks_size(); ++i) {
    const orrery::server::PayloadView payload = push->Payload(i);
    const uint64_t n = payload.element_count;
    if (n > (1u << 16) || !orrery::server::CheckPayload(payload, n).ok()) continue;
    std::vector<float> out(n), acc(n, 0.0f), w(n, 1.0f), v(n, 0.0f);
    (void)orrery::server::DecodeFloats(payload, out);
    (void)orrery::server::PayloadAllFinite(payload);
    orrery::server::AccumulatePayload(payload, 0.5f, acc);
    orrery::server::ApplyPayload(payload, 0.5f, 0.9f, w, v);
  }
  return 0;
}
