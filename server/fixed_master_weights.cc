#include "server/fixed_master_weights.h"

#include <glog/logging.h>

#include "quant/fixed_convert.h"

namespace orrery::server {

FixedMasterWeights::FixedMasterWeights(quant::FixedFormat format, quant::Rounding rounding,
                                       uint64_t stream_key)
    : format_(format), rounding_(rounding), stream_key_(stream_key) {}

void FixedMasterWeights::Initialize(std::span<float> weights) {
  Store(weights, quant::Rounding::kNearest, {});
}

void FixedMasterWeights::Round(std::span<float> weights, uint64_t version) {
  Store(weights, rounding_, quant::RandomStream::For(stream_key_, version));
}

void FixedMasterWeights::Store(std::span<float> weights, quant::Rounding rounding,
                               quant::RandomStream stream) {
  words_.resize(weights.size());
  const float lo = static_cast<float>(format_.min_value());
  const float hi = static_cast<float>(format_.max_value());
  for (float w : weights) saturated_ += (w < lo || w > hi) ? 1 : 0;
  // Sizes match by construction, so neither call can fail.
  absl::Status st = quant::Quantize(weights, format_, rounding, stream, words_);
  CHECK(st.ok()) << st;
  st = quant::Dequantize(words_, format_, weights);
  CHECK(st.ok()) << st;
}

}  // namespace orrery::server
