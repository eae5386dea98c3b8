#include "cli/output_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/replace_file.h"

namespace orrery::cli {
namespace {

absl::Status Cannot(const std::string& flag, const std::string& path, int error) {
  return absl::InvalidArgumentError(absl::StrCat(flag, ": cannot write ", path, ": ", std::strerror(error)));
}

}  // namespace

absl::Status CheckOutputPath(const std::string& flag, const std::string& path) {
  if (path.empty()) return absl::OkStatus();
  const bool existed = ::access(path.c_str(), F_OK) == 0;
  // No O_TRUNC: an existing file keeps its content until the result replaces it.
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return Cannot(flag, path, errno);
  ::close(fd);
  if (!existed) ::unlink(path.c_str());
  return absl::OkStatus();
}

absl::Status WriteOutputFile(const std::string& flag, const std::string& path, const std::string& text) {
  absl::Status st = ReplaceFile(path, path + ".tmp", text);
  if (!st.ok()) return absl::InvalidArgumentError(absl::StrCat(flag, ": ", st.message()));
  return absl::OkStatus();
}

}  // namespace orrery::cli
