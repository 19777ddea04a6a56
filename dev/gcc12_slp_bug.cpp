// GCC 12.2 + -march=native on an AVX-512 CPU: prints "1 1 1 1" instead of "1 1 0 0" at -O2 / -O3;
// correct with -fno-tree-slp-vectorize (set in CMakeLists.txt for GNU compilers).
//   g++ -O3 -march=native dev/gcc12_slp_bug.cpp -o /tmp/slp && /tmp/slp
#include <cstdio>
template <class T>
__attribute__((noinline)) void fill(T* out) {
  T v[4] = {1, 1, 0, 0};
  for (int i = 0; i < 4; ++i) out[i] = v[i];
}
int main() {
  double d[4];
  fill(d);
  std::printf("%g %g %g %g\n", d[0], d[1], d[2], d[3]);
}
