// The one place that maps absl::Status to and from grpc::Status. The canonical codes share their
// numbers, so the mapping keeps the code and the message.
#pragma once

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace orrery::server {

grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace orrery::server
