// A value from a user's file, quoted for an error message: control characters escaped (the
// message stays one line) and long values cut, so that a wrong file (a model path pointing at
// /etc/passwd) yields a line a person can read rather than the file.
#pragma once

#include <string>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace orrery {

inline std::string Quoted(absl::string_view text, size_t max_chars = 60) {
  if (text.size() <= max_chars) return absl::StrCat("'", absl::CHexEscape(text), "'");
  return absl::StrCat("'", absl::CHexEscape(text.substr(0, max_chars)), "...' (", text.size(), " characters)");
}

}  // namespace orrery
