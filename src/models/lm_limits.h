// The one place that states how large a language-model config.json (Mamba in both layouts, hybrid
// Mamba stacks, GPT-NeoX; also a VLM's text_config) may be. Checked by MambaConfig::finalize and
// GPTNeoXConfig::finalize before anything is allocated; errors name the file and the field
// ("DIR/config.json: intermediate_size 274877906944 is over the limit of 1048576").
//
// The bounds are far above every real checkpoint, so they only ever refuse corrupt or hostile
// configs. For scale: Pythia-12B has hidden 5120, 36 layers, 40 heads, MLP 20480, vocab 50688;
// GPT-NeoX-20B 6144 / 44 / 64 / 24576 / 50432; Mamba-2.8B d_model 2560, 64 layers, vocab 50280,
// d_inner 5120, d_state 16, dt_rank 160; Falcon-Mamba-7B 4096 / 64 / 65024 / 8192 / 16 / 256;
// the largest open models: hidden 16384, MLP 53248, 126 layers (Llama-3-405B), vocab 256000
// (Gemma), 1M positions.
//
// Within these bounds a config can still describe more than its weights hold; that is caught by
// comparing it with the safetensors header before the model is built (weights_check.h).
#pragma once
#include <cstdint>

namespace mambavl::models {

struct LMLimits {
  static constexpr int64_t kMaxVocab = int64_t{1} << 24;         // vocab_size (16,777,216)
  static constexpr int64_t kMaxHidden = int64_t{1} << 16;        // hidden_size, d_model
  static constexpr int64_t kMaxIntermediate = int64_t{1} << 20;  // intermediate_size, d_inner
  static constexpr int64_t kMaxLayers = int64_t{1} << 12;        // num_hidden_layers, n_layer
  static constexpr int64_t kMaxHeads = int64_t{1} << 12;         // attention heads (and kv heads)
  static constexpr int64_t kMaxHeadDim = int64_t{1} << 12;       // attention head dimension
  static constexpr int64_t kMaxPositions = int64_t{1} << 24;     // max_position_embeddings
  static constexpr int64_t kMaxDState = 1024;                    // SSM state size
  static constexpr int64_t kMaxDConv = 1024;                     // causal conv width
  static constexpr int64_t kMaxExpand = 64;                      // d_inner / d_model
  static constexpr int64_t kMaxDtRank = int64_t{1} << 16;        // time_step_rank, dt_rank
  static constexpr int64_t kMaxPadMultiple = int64_t{1} << 16;   // pad_vocab_size_multiple
  // The whole model: 2^36 = 68.7 billion parameters (GPT-NeoX-20B has 20.6 billion).
  static constexpr double kMaxParameters = static_cast<double>(int64_t{1} << 36);
};

}  // namespace mambavl::models
