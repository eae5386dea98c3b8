// Progress output for long runs: a live, rewritten line on a terminal, plain lines otherwise.
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>

namespace orrery {

// Not thread-safe; one owner writes progress. Plain mode rate-limits to one line per `interval`.
class ProgressLine {
 public:
  explicit ProgressLine(FILE* out = stderr, std::chrono::milliseconds interval = std::chrono::seconds(2))
      : out_(out), tty_(isatty(fileno(out)) != 0), interval_(interval) {}

  // Shows `text` as the current progress; on a terminal rewrites the line, else prints it when due.
  void Update(const std::string& text) {
    auto now = std::chrono::steady_clock::now();
    if (tty_) {
      std::fprintf(out_, "\r\033[K%s", text.c_str());
      std::fflush(out_);
      live_ = true;
    } else if (now - last_ >= interval_) {
      std::fprintf(out_, "%s\n", text.c_str());
      std::fflush(out_);
      last_ = now;
    }
  }

  // Prints `text` as a permanent line (ending any live line first).
  void Print(const std::string& text) {
    if (live_) std::fprintf(out_, "\r\033[K");
    live_ = false;
    std::fprintf(out_, "%s\n", text.c_str());
    std::fflush(out_);
  }

 private:
  FILE* out_;
  bool tty_;
  bool live_ = false;
  std::chrono::milliseconds interval_;
  std::chrono::steady_clock::time_point last_{};
};

}  // namespace orrery
