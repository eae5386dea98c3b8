// TLS for the parameter server's gRPC channels, from PEM files.
//
// Shards serve with a certificate and key; with a client CA they also require and verify client
// certificates (mutual TLS). Learners verify the shard against a CA and, for mutual TLS, present
// their own certificate. Every file is read here, so a missing or unreadable one is an error that
// names it, before any connection is tried.
#pragma once

#include <memory>
#include <string>

#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>

#include "absl/status/statusor.h"

namespace orrery::server {

struct TlsFiles {
  std::string ca;    // PEM CA bundle: the shard's, for clients; the clients', for mutual TLS
  std::string cert;  // PEM certificate chain of this process
  std::string key;   // PEM private key of `cert`
  bool enabled() const { return !ca.empty() || !cert.empty() || !key.empty(); }
};

// Server side: `cert` and `key` required; with `ca`, clients must present a certificate it signed.
// Without any file: insecure credentials.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(const TlsFiles& files);

// Client side: `ca` required; `cert` and `key` together (mutual TLS) or not at all. Without any
// file: insecure credentials.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(const TlsFiles& files);

}  // namespace orrery::server
