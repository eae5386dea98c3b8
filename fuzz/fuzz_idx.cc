// Fashion-MNIST IDX files (plain or gzipped): a corrupt pair must be refused, never crash.
// Input: 4-byte little-endian length n, then n bytes of the images file, the rest the labels file.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>

#include "learner/fashion_mnist.h"

namespace {
std::string WriteTemp(const char* tag, const uint8_t* data, size_t size) {
  std::string path = "/tmp/orrery-fuzz-idx-" + std::to_string(getpid()) + "-" + tag;
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) __builtin_trap();
  if (size > 0) std::fwrite(data, 1, size, f);
  std::fclose(f);
  return path;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 4) return 0;
  uint32_t n;
  std::memcpy(&n, data, 4);
  data += 4;
  size -= 4;
  n = static_cast<uint32_t>(std::min<size_t>(n, size));
  const std::string images = WriteTemp("images", data, n);
  const std::string labels = WriteTemp("labels", data + n, size - n);
  absl::StatusOr<orrery::learner::Dataset> d = orrery::learner::LoadIdxPair(images, labels, 1000);
  if (d.ok() && (d->images.size() != static_cast<size_t>(d->count) * d->rows * d->cols ||
                 d->labels.size() != static_cast<size_t>(d->count))) {
    __builtin_trap();
  }
  unlink(images.c_str());
  unlink(labels.c_str());
  return 0;
}
