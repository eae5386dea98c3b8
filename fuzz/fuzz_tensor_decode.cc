// A peer's EncodedTensor (the payload of every Push and Pull): any bytes must decode into a buffer
// of the declared size or be refused, never read or write out of bounds.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "parameter_server.pb.h"
#include "server/tensor_codec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  orrery::proto::EncodedTensor tensor;
  if (!tensor.ParseFromArray(data, static_cast<int>(size))) return 0;
  // Bound what the decoder is asked to fill, as the shard does from the layout.
  if (tensor.element_count() > (1u << 20)) return 0;
  std::vector<float> out(tensor.element_count(), 7.0f);
  const std::vector<float> before = out;
  absl::Status st = orrery::server::DecodeFloats(tensor, out);
  if (!st.ok() && out != before) __builtin_trap();  // a refused payload leaves the buffer alone
  return 0;
}
