// The random source for stochastic rounding: a counter-based generator, so the draw for element i
// is a pure function of (key, i). Scalar and vector code paths, any split of a tensor into chunks,
// and any number of threads therefore consume exactly the same random stream, and a run is
// reproducible from (learner, step).
#ifndef ORRERY_QUANT_COUNTER_RNG_H_
#define ORRERY_QUANT_COUNTER_RNG_H_

#include <cstdint>

namespace orrery::quant {

// SplitMix64 finalizer: a bijective 64-bit mixer.
constexpr uint64_t Mix64(uint64_t z) {
  z ^= z >> 30;
  z *= 0xBF58476D1CE4E5B9ull;
  z ^= z >> 27;
  z *= 0x94D049BB133111EBull;
  z ^= z >> 31;
  return z;
}

// MurmurHash3's fmix32: a bijective 32-bit mixer with full avalanche.
constexpr uint32_t Mix32(uint32_t h) {
  h ^= h >> 16;
  h *= 0x85EBCA6Bu;
  h ^= h >> 13;
  h *= 0xC2B2AE35u;
  h ^= h >> 16;
  return h;
}

inline constexpr uint32_t kCounterMultiplier = 0x9E3779B9u;

// Identifies one random stream. `key` selects the stream; element i of a tensor draws
// CounterRandom(key, offset + i). Value type, freely copied.
struct RandomStream {
  uint64_t key = 0;
  uint64_t offset = 0;

  // The stream for one (learner, step, purpose); `purpose` separates e.g. the gradient of each
  // tensor so two tensors in one step do not reuse draws.
  static constexpr RandomStream For(uint64_t learner, uint64_t step, uint64_t purpose = 0) {
    return RandomStream{Mix64(Mix64(Mix64(learner + 0x9E3779B97F4A7C15ull) ^ step) ^ purpose), 0};
  }
  // The same stream starting `n` elements later (for a chunk that begins at element n).
  constexpr RandomStream Advanced(uint64_t n) const { return RandomStream{key, offset + n}; }
};

// Per-2^32-element-block 32-bit key: the vector paths hold it constant within a block.
constexpr uint32_t BlockKey(uint64_t key, uint32_t block) {
  return static_cast<uint32_t>(Mix64(key ^ (static_cast<uint64_t>(block) * 0xD6E8FEB86659FD93ull)));
}

// The draw for absolute counter `index` of stream `key`.
constexpr uint32_t CounterRandom(uint64_t key, uint64_t index) {
  const uint32_t k = BlockKey(key, static_cast<uint32_t>(index >> 32));
  return Mix32(static_cast<uint32_t>(index) * kCounterMultiplier + k);
}

}  // namespace orrery::quant

#endif  // ORRERY_QUANT_COUNTER_RNG_H_
