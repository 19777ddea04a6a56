// `mambavl bench vision`: images/s of the vision side: each connector and each encoder preset, in
// one run.
#pragma once
#include <CLI/CLI.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace mambavl::models {
class VisionEncoder;
}

namespace mambavl::bench {

// Adds `bench vision` (--threads, --iters, --batch, ...) to `bench`.
void add_vision_bench(CLI::App& bench);

// One vision encoder to time (random weights) on square images of `image_size` pixels.
struct EncoderBenchEntry {
  std::string name;                                              // e.g. "clip-vit-l/14-336"
  std::function<std::unique_ptr<models::VisionEncoder>()> make;  // builds it (random weights)
  int64_t image_size = 224;
};

}  // namespace mambavl::bench
