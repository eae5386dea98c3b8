// What a benchmark's JSON records about the machine it ran on (see bench/README.md).
#pragma once

#include <ctime>
#include <fstream>
#include <string>

namespace orrery::bench {

// The CPU's "model name" from /proc/cpuinfo ("unknown" when there is none).
inline std::string CpuModel() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) return line.substr(line.find_first_not_of(' ', colon + 1));
    }
  }
  return "unknown";
}

// Today's date (UTC) as YYYY-MM-DD.
inline std::string Today() {
  const std::time_t t = std::time(nullptr);
  char buf[16];
  std::strftime(buf, sizeof buf, "%Y-%m-%d", std::gmtime(&t));
  return buf;
}

// The 1-minute load average (-1 when unreadable).
inline double LoadAverage() {
  std::ifstream in("/proc/loadavg");
  double load = -1;
  in >> load;
  return load;
}

}  // namespace orrery::bench
