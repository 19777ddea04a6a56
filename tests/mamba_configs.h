// Small Mamba configurations for the tests (expand 2, d_conv 4, d_inner and dt_rank derived).
#pragma once
#include <cstdint>

#include "models/mamba.h"

namespace mambavl::testing_util {

inline models::MambaConfig small_mamba_config(int64_t d_model, int64_t n_layer, int64_t d_state,
                                              int64_t vocab = 50) {
  models::MambaConfig c;
  c.d_model = d_model;
  c.n_layer = n_layer;
  c.vocab_size = vocab;
  c.d_state = d_state;
  c.d_conv = 4;
  c.expand = 2;
  c.d_inner = 0;
  c.dt_rank = 0;
  c.finalize();
  return c;
}

}  // namespace mambavl::testing_util
