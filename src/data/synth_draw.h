// Portable random numbers and shape rasterisation shared by the built-in synthetic data
// (SyntheticDataset in image_dataset.cpp, the scenes in scenes.cpp). Everything is integer
// arithmetic or fixed bit manipulation, so the generated data is identical on every machine
// (std::uniform_*_distribution is implementation-defined and never used here).
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstdlib>

#include "common/mix64.h"

namespace mambavl::data::synth {

using mambavl::mix64;  // common/mix64.h

// Counter-based stream keyed by (seed, key): draw n is mix64(state + n * golden).
class Stream {
 public:
  Stream(uint64_t seed, uint64_t key) : s_(mix64(mix64(seed) ^ (key * 0xD1B54A32D192ED03ull))) {}
  uint64_t next() {
    s_ += 0x9E3779B97F4A7C15ull;
    return mix64(s_);
  }
  // Uniform integer in [lo, hi] (hi - lo small: the modulo bias is below 2^-40).
  int64_t range(int64_t lo, int64_t hi) {
    return lo + static_cast<int64_t>(next() % static_cast<uint64_t>(hi - lo + 1));
  }

 private:
  uint64_t s_;
};

// Uniform double in [0, 1) from a raw 64-bit draw (portable, unlike
// std::uniform_real_distribution).
inline double unit(uint64_t bits) { return static_cast<double>(bits >> 11) * 0x1.0p-53; }

// Shape indices understood by inside().
enum Shape : size_t {
  kCircle = 0,
  kSquare = 1,
  kTriangle = 2,
  kCross = 3,
  kRing = 4,
  kDiamond = 5
};

// Is (dx, dy) from the centre inside shape `s` of radius r? Integer arithmetic only.
inline bool inside(size_t s, int64_t dx, int64_t dy, int64_t r) {
  const int64_t ax = std::llabs(dx), ay = std::llabs(dy), d2 = dx * dx + dy * dy;
  switch (s) {
    case kCircle:
      return d2 <= r * r;
    case kSquare:  // a little smaller, so its area is close to the circle's
      return 10 * ax <= 9 * r && 10 * ay <= 9 * r;
    case kTriangle:  // apex up: rows from -r to r, half-width growing to r
      return dy >= -r && dy <= r && 2 * ax <= dy + r;
    case kCross:  // two bars a third of the size wide
      return (3 * ax <= r && ay <= r) || (3 * ay <= r && ax <= r);
    case kRing:  // outer radius r, inner r / 2
      return d2 <= r * r && 4 * d2 >= r * r;
    default:  // diamond
      return ax + ay <= r;
  }
}

inline uint8_t clamp8(int64_t v) { return static_cast<uint8_t>(std::clamp<int64_t>(v, 0, 255)); }

}  // namespace mambavl::data::synth
