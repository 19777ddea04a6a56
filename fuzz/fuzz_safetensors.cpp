// libFuzzer harness: a .safetensors file (u64 header length, JSON header = the tensor table and
// __metadata__, data buffer). The input is written to a file (the reader memory-maps paths) and
// opened twice: by io::SafetensorsFile and, as dir/model.safetensors, by io::CheckpointFolder;
// every tensor is read out, both read from the file and as a view of the mapping (every byte of
// the view is touched, so a span the validation accepted past the end of the file would fault).
#include <ATen/core/Tensor.h>

#include "fuzz_util.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"

using namespace mambavl;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto& dir = fuzz::scratch_dir("fuzz_safetensors");
  const auto file = dir / "model.safetensors";
  fuzz::write_bytes(file, data, size);

  const bool opened = fuzz::expect_ok_or_error([&] {
    io::SafetensorsFile st(file);
    for (const auto& [k, v] : st.metadata()) (void)(k.size() + v.size());
    for (const auto& name : st.names()) {
      const io::TensorEntry& e = st.entry(name);
      fuzz::expect_ok_or_error([&] {
        at::Tensor t = st.tensor(name);
        if (t.numel() != 0 && t.nbytes() != e.end - e.begin) std::abort();  // size mismatch
      });
      fuzz::expect_ok_or_error([&] {
        at::Tensor v = st.view(name);
        if (v.numel() != 0 && v.nbytes() != e.end - e.begin) std::abort();
        const auto* b = static_cast<const volatile uint8_t*>(v.data_ptr());
        uint8_t acc = 0;
        for (size_t i = 0; i < v.nbytes(); ++i) acc ^= b[i];
        (void)acc;
      });
    }
  });
  if (!opened) return 0;
  fuzz::expect_ok_or_error([&] {
    io::CheckpointFolder ckpt(dir);
    for (const auto& name : ckpt.names()) {
      (void)ckpt.shape(name);
      (void)ckpt.dtype(name);
      fuzz::expect_ok_or_error([&] { (void)ckpt.tensor(name); });
      fuzz::expect_ok_or_error([&] { (void)ckpt.view(name); });
    }
  });
  return 0;
}
