// A model layout from (tensor name, element count) pairs, for the server tests and the fuzz
// targets (no gtest here: fuzz/ includes it too).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "parameter_server.pb.h"

namespace orrery::server::testing {

inline proto::ModelLayout MakeLayout(const std::vector<std::pair<std::string, uint64_t>>& tensors,
                                     uint32_t chunk_size, uint32_t shards) {
  proto::ModelLayout layout;
  for (const auto& [name, n] : tensors) {
    proto::TensorDecl* t = layout.add_tensors();
    t->set_name(name);
    t->set_element_count(n);
  }
  layout.set_chunk_size(chunk_size);
  layout.set_num_shards(shards);
  return layout;
}

}  // namespace orrery::server::testing
