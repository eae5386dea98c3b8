// A push decoded from bytes cut into pieces, as gRPC's slices would cut them, for the push
// decoder's tests and its fuzz target (no gtest here: fuzz/ includes it too).
#pragma once

#include <memory>
#include <span>
#include <vector>

#include "absl/strings/string_view.h"
#include "google/protobuf/io/zero_copy_stream_impl.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "server/push_decoder.h"

namespace orrery::server::testing {

// DecodePushRequest over the concatenation of `pieces` (which must outlive the result).
inline absl::StatusOr<ReceivedPush> DecodePieces(std::span<const absl::string_view> pieces) {
  std::vector<std::unique_ptr<google::protobuf::io::ArrayInputStream>> arrays;
  std::vector<google::protobuf::io::ZeroCopyInputStream*> streams;
  for (absl::string_view p : pieces) {
    arrays.push_back(std::make_unique<google::protobuf::io::ArrayInputStream>(
        p.data(), static_cast<int>(p.size())));
    streams.push_back(arrays.back().get());
  }
  google::protobuf::io::ConcatenatingInputStream in(streams.data(),
                                                    static_cast<int>(streams.size()));
  return DecodePushRequest(&in, nullptr);
}

}  // namespace orrery::server::testing
