// Result files a command writes at the end of its work (--metrics-out): checked before the work
// starts, so that a long run does not end unable to save its result, and written whole through a
// temporary file and a rename, so that a failed write leaves an earlier file as it was.
#pragma once

#include <string>

#include "absl/status/status.h"

namespace orrery::cli {

// OK when `path` is "" (no file wanted) or can be created or written (a new file is removed
// again); otherwise an INVALID_ARGUMENT error naming `flag`, the path and why.
absl::Status CheckOutputPath(const std::string& flag, const std::string& path);

// Writes `text` to `path` + ".tmp", then renames it over `path` (base/replace_file.h).
absl::Status WriteOutputFile(const std::string& flag, const std::string& path, const std::string& text);

}  // namespace orrery::cli
