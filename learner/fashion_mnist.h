// Fashion-MNIST (IDX format, optionally gzipped) reading, validation, slicing and shuffling.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace orrery::learner {

// Images as float in [0, 1], NCHW with C = 1; labels in [0, 10).
struct Dataset {
  int64_t count = 0;
  int rows = 0;
  int cols = 0;
  std::vector<float> images;    // count * rows * cols
  std::vector<int32_t> labels;  // count
};

enum class Split { kTrain, kTest };

// Debian's dataset-fashion-mnist installs here.
inline constexpr char kDefaultFashionMnistDir[] = "/usr/share/datasets/fashion-mnist";

// Reads "<dir>/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]". `limit` > 0 keeps only the first
// `limit` examples. Errors name the file and what is wrong: missing file, bad magic, wrong
// dimension count, truncated data, image/label count mismatch, label out of range, bad gzip.
absl::StatusOr<Dataset> LoadFashionMnist(const std::string& dir, Split split, int64_t limit = 0);

// Reads an IDX image file and an IDX label file (each gzipped or plain).
absl::StatusOr<Dataset> LoadIdxPair(const std::string& images_path, const std::string& labels_path,
                                    int64_t limit = 0);

// Learner `part` of `parts` takes examples [part*count/parts, (part+1)*count/parts).
// Requires 0 <= part < parts (InvalidArgument otherwise).
absl::StatusOr<Dataset> SliceDataset(const Dataset& data, int part, int parts);

// A permutation of [0, count) from `seed` (std::mt19937_64; the same seed gives the same order).
std::vector<int64_t> ShuffledOrder(int64_t count, uint64_t seed);

}  // namespace orrery::learner
