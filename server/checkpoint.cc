#include "server/checkpoint.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string_view>

#include "absl/strings/str_cat.h"

namespace orrery::server {
namespace {

constexpr char kMagic[8] = {'O', 'R', 'R', 'Y', 'C', 'K', 'P', '1'};
constexpr size_t kHeader = sizeof kMagic + sizeof(uint64_t) + sizeof(uint32_t);
// Protobuf parses at most 2^31 - 1 bytes; a larger length is corruption.
constexpr uint64_t kMaxPayload = INT32_MAX;

uint32_t Crc32(std::string_view bytes) {
  return static_cast<uint32_t>(
      crc32_z(0L, reinterpret_cast<const Bytef*>(bytes.data()), bytes.size()));
}

absl::Status ErrnoError(const std::string& what, const std::string& path) {
  return absl::InternalError(absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

absl::Status WriteAll(int fd, const char* p, size_t n, const std::string& path) {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return ErrnoError("cannot write", path);
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
  return absl::OkStatus();
}

}  // namespace

std::string CheckpointPath(const std::string& dir, int shard) {
  return (std::filesystem::path(dir) / absl::StrCat("shard-", shard, ".ckpt")).string();
}

absl::Status WriteCheckpointFile(const std::string& path, const proto::ShardCheckpoint& checkpoint) {
  const std::filesystem::path target(path);
  const std::filesystem::path dir =
      target.has_parent_path() ? target.parent_path() : std::filesystem::path(".");
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", dir.string(), ": ", ec.message()));

  std::string payload;
  if (!checkpoint.SerializeToString(&payload)) {
    return absl::InternalError(absl::StrCat("cannot serialise the checkpoint for ", path));
  }
  const std::string header = CheckpointHeader(payload);
  const std::string tmp = absl::StrCat(path, ".tmp.", ::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoError("cannot create", tmp);
  absl::Status st = WriteAll(fd, header.data(), header.size(), tmp);
  if (st.ok()) st = WriteAll(fd, payload.data(), payload.size(), tmp);
  if (st.ok() && ::fsync(fd) != 0) st = ErrnoError("cannot fsync", tmp);
  if (::close(fd) != 0 && st.ok()) st = ErrnoError("cannot close", tmp);
  if (st.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) st = ErrnoError("cannot rename onto", path);
  if (!st.ok()) {
    ::unlink(tmp.c_str());
    return st;
  }
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return ErrnoError("cannot open directory", dir.string());
  const bool synced = ::fsync(dfd) == 0;
  ::close(dfd);
  if (!synced) return ErrnoError("cannot fsync directory", dir.string());
  return absl::OkStatus();
}

absl::StatusOr<proto::ShardCheckpoint> ReadCheckpointFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (!std::filesystem::exists(path)) return absl::NotFoundError(absl::StrCat("checkpoint ", path, " does not exist"));
    return absl::PermissionDeniedError(absl::StrCat("cannot read checkpoint ", path));
  }
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return ParseCheckpointFile(buffer.str(), path);
}

std::string CheckpointHeader(std::string_view payload) {
  std::string header(kMagic, sizeof kMagic);
  const uint64_t length = payload.size();
  const uint32_t crc = Crc32(payload);
  header.append(reinterpret_cast<const char*>(&length), sizeof length);
  header.append(reinterpret_cast<const char*>(&crc), sizeof crc);
  return header;
}

absl::StatusOr<proto::ShardCheckpoint> ParseCheckpointFile(std::string_view bytes, const std::string& path) {
  auto corrupt = [&](const std::string& why) {
    return absl::DataLossError(absl::StrCat("checkpoint ", path, " is unusable: ", why));
  };
  if (bytes.size() < kHeader) return corrupt(absl::StrCat("truncated (", bytes.size(), " bytes)"));
  if (std::memcmp(bytes.data(), kMagic, sizeof kMagic) != 0) return corrupt("not an Orrery shard checkpoint (bad magic)");
  uint64_t length = 0;
  uint32_t crc = 0;
  std::memcpy(&length, bytes.data() + sizeof kMagic, sizeof length);
  std::memcpy(&crc, bytes.data() + sizeof kMagic + sizeof length, sizeof crc);
  if (length > kMaxPayload || bytes.size() - kHeader != length) {
    return corrupt(absl::StrCat("truncated or padded: the header says ", length,
                                " bytes of state, the file holds ", bytes.size() - kHeader));
  }
  const std::string_view payload = bytes.substr(kHeader);
  if (Crc32(payload) != crc) return corrupt("checksum mismatch (the file was damaged)");
  proto::ShardCheckpoint checkpoint;
  if (!checkpoint.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
    return corrupt("the state does not parse");
  }
  return checkpoint;
}

}  // namespace orrery::server
