// Named tensors laid out in one flat float buffer: a model's parameters, or their gradients.
// The parameter server shards this buffer by tensor name and chunk; the optimizer walks it flat.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"

namespace orrery::learner {

struct TensorInfo {
  std::string name;            // "conv1.weight", "fc2.bias"
  std::vector<int64_t> dims;   // logical dims in the layout the owning layer documents
  int64_t offset = 0;          // first element in the flat buffer
  int64_t size = 0;            // element count
};

// Not thread-safe; one owner. Tensors are added before the buffer is allocated (Finalize).
class ParamSet {
 public:
  // Adds a tensor; returns its index. Must be called before Finalize.
  int Add(std::string name, std::vector<int64_t> dims);
  // Allocates the buffer (zero-filled). Later Adds are a bug (CHECK).
  void Finalize();

  std::span<float> flat() { return data_; }
  std::span<const float> flat() const { return data_; }
  std::span<float> tensor(int index);
  std::span<const float> tensor(int index) const;
  absl::StatusOr<std::span<float>> tensor(const std::string& name);
  const std::vector<TensorInfo>& infos() const { return infos_; }
  int64_t total_size() const { return total_; }

 private:
  std::vector<TensorInfo> infos_;
  absl::flat_hash_map<std::string, int> by_name_;
  std::vector<float> data_;
  int64_t total_ = 0;
  bool finalized_ = false;
};

}  // namespace orrery::learner
