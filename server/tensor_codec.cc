#include "server/tensor_codec.h"

#include <bit>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace orrery::server {
namespace {
static_assert(std::endian::native == std::endian::little,
              "FP32 payloads are little-endian; add byte swapping for big-endian hosts");
}  // namespace

absl::Status EncodeFloats(std::span<const float> values, proto::Encoding encoding,
                          proto::EncodedTensor* out) {
  switch (encoding) {
    case proto::FP32:
    case proto::ENCODING_UNSPECIFIED: {
      out->set_encoding(proto::FP32);
      out->set_element_count(static_cast<uint32_t>(values.size()));
      out->set_fractional_bits(0);
      std::string* data = out->mutable_data();
      data->resize(values.size() * sizeof(float));
      if (!values.empty()) std::memcpy(data->data(), values.data(), data->size());
      return absl::OkStatus();
    }
    default:
      return absl::UnimplementedError(absl::StrCat(
          "encoding ", proto::Encoding_Name(encoding), " is not supported yet; use FP32"));
  }
}

absl::Status DecodeFloats(const proto::EncodedTensor& in, std::span<float> out) {
  if (in.element_count() != out.size()) {
    return absl::InvalidArgumentError(absl::StrCat("payload declares ", in.element_count(),
                                                   " elements but ", out.size(), " are expected"));
  }
  switch (in.encoding()) {
    case proto::FP32: {
      const size_t want = out.size() * sizeof(float);
      if (in.data().size() != want) {
        return absl::InvalidArgumentError(absl::StrCat("FP32 payload of ", out.size(),
                                                       " elements must be ", want,
                                                       " bytes, got ", in.data().size()));
      }
      if (want != 0) std::memcpy(out.data(), in.data().data(), want);
      return absl::OkStatus();
    }
    case proto::ENCODING_UNSPECIFIED:
      return absl::InvalidArgumentError("payload has no encoding set; use FP32");
    default:
      return absl::UnimplementedError(absl::StrCat(
          "encoding ", proto::Encoding_Name(in.encoding()), " is not supported yet; use FP32"));
  }
}

bool AllFinite(std::span<const float> values) {
  for (float v : values) {
    if (!std::isfinite(v)) return false;
  }
  return true;
}

}  // namespace orrery::server
