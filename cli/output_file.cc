#include "cli/output_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace orrery::cli {
namespace {

absl::Status Cannot(const std::string& flag, const std::string& path, int error) {
  return absl::InvalidArgumentError(absl::StrCat(flag, ": cannot write ", path, ": ", std::strerror(error)));
}

}  // namespace

absl::Status CheckOutputPath(const std::string& flag, const std::string& path) {
  const bool existed = ::access(path.c_str(), F_OK) == 0;
  // No O_TRUNC: an existing file keeps its content until the result replaces it.
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return Cannot(flag, path, errno);
  ::close(fd);
  if (!existed) ::unlink(path.c_str());
  return absl::OkStatus();
}

absl::Status WriteOutputFile(const std::string& flag, const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Cannot(flag, tmp, errno);
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int error = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      return Cannot(flag, tmp, error);
    }
    done += static_cast<size_t>(n);
  }
  if (::close(fd) != 0 || std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int error = errno;
    ::unlink(tmp.c_str());
    return Cannot(flag, path, error);
  }
  return absl::OkStatus();
}

}  // namespace orrery::cli
