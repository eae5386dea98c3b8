// Checkpoint files of parameter-server shards.
//
// Layout: the 8 bytes "ORRYCKP1", the payload's length (uint64, little-endian), its CRC-32
// (uint32, zlib), then the payload: a serialised proto::ShardCheckpoint. Writes are atomic:
// a temporary file in the same directory, fsync, rename over the old file, fsync of the directory;
// a crash leaves either the old checkpoint or the new one, never a mix.
//
// Reading never trusts the file: a short, corrupt, foreign or mismatched checkpoint is refused
// with an error naming the file and what is wrong.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "checkpoint.pb.h"

namespace orrery::server {

// The file of shard `shard` in `dir`: DIR/shard-<shard>.ckpt.
std::string CheckpointPath(const std::string& dir, int shard);

// Writes `checkpoint` to `path` atomically (creating the directory if needed).
absl::Status WriteCheckpointFile(const std::string& path, const proto::ShardCheckpoint& checkpoint);

// Reads and verifies `path`: NOT_FOUND when it does not exist, DATA_LOSS when it is truncated or
// its checksum or contents are wrong.
absl::StatusOr<proto::ShardCheckpoint> ReadCheckpointFile(const std::string& path);

// The checks of ReadCheckpointFile on a file's bytes already read; `path` names it in errors.
absl::StatusOr<proto::ShardCheckpoint> ParseCheckpointFile(std::string_view bytes, const std::string& path);

// What precedes `payload` (a serialised ShardCheckpoint) in its file: magic, length, CRC-32.
std::string CheckpointHeader(std::string_view payload);

}  // namespace orrery::server
