// Writing a file whole: the text goes to a temporary file beside it, which is then renamed over
// it, so a reader sees the old file or the new one, never a part, and a failed write leaves the
// old file as it was. (Checkpoints, which must also survive a crash, add fsync: server/checkpoint.h.)
#pragma once

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace orrery {

// Writes `text` to `tmp`, then renames `tmp` to `path`. On failure `tmp` is removed and the
// error (UNAVAILABLE) names the file and the reason.
inline absl::Status ReplaceFile(const std::string& path, const std::string& tmp, absl::string_view text) {
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    out.close();
    if (!out) {
      const int error = errno;
      std::remove(tmp.c_str());
      return absl::UnavailableError(absl::StrCat("cannot write ", tmp, ": ", std::strerror(error)));
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int error = errno;
    std::remove(tmp.c_str());
    return absl::UnavailableError(absl::StrCat("cannot rename ", tmp, " to ", path, ": ", std::strerror(error)));
  }
  return absl::OkStatus();
}

}  // namespace orrery
