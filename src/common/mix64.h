// splitmix64's output function (Steele, Lea, Flood 2014): a fixed, portable 64-bit mix, so data
// orders, step seeds and synthetic data are the same on every platform (std distributions are
// implementation-defined). mix64(z) = finalizer(z + golden ratio).
#pragma once
#include <cstdint>

namespace mambavl {

inline uint64_t mix64(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace mambavl
