#include "models/presets.h"

#include <algorithm>
#include <map>

#include "common/error.h"
#include "models/gpt_neox.h"
#include "models/mamba.h"

namespace mambavl::models {

namespace {
struct MambaShape {
  int64_t layers, d_model, vocab;
};
const std::map<std::string, MambaShape>& mamba_presets() {
  static const std::map<std::string, MambaShape> m = {
      {"mamba-tiny", {2, 64, 512}},      {"mamba-130m", {24, 768, 50280}},
      {"mamba-370m", {48, 1024, 50280}}, {"mamba-790m", {48, 1536, 50280}},
      {"mamba-1.4b", {48, 2048, 50280}}, {"mamba-2.8b", {64, 2560, 50280}}};
  return m;
}
// Hybrid shapes (SPEC §1.3): a Mamba preset whose every `every`-th layer (the last of each group)
// is mamba_ssm's MHA, with head_dim 64, rotary on half of each head and no projection biases, as
// mamba_ssm's hybrid configs have them.
struct HybridShape {
  const char* base;
  int64_t every;
};
const std::map<std::string, HybridShape>& hybrid_presets() {
  static const std::map<std::string, HybridShape> m = {{"hybrid-tiny", {"mamba-tiny", 2}},
                                                       {"hybrid-130m", {"mamba-130m", 6}}};
  return m;
}
struct NeoXShape {
  int64_t layers, hidden, heads, vocab;
};
// Pythia sizes (SPEC §1.2): layers x hidden x heads, vocabulary padded to 50304.
const std::map<std::string, NeoXShape>& neox_presets() {
  static const std::map<std::string, NeoXShape> m = {
      {"pythia-tiny", {2, 64, 4, 512}},      {"pythia-70m", {6, 512, 8, 50304}},
      {"pythia-160m", {12, 768, 12, 50304}}, {"pythia-410m", {24, 1024, 16, 50304}},
      {"pythia-1b", {16, 2048, 8, 50304}},   {"pythia-1.4b", {24, 2048, 16, 50304}},
      {"pythia-2.8b", {32, 2560, 32, 50304}}};
  return m;
}
}  // namespace

std::vector<std::string> preset_names() {
  std::vector<std::string> v;
  for (auto& [k, _] : mamba_presets()) v.push_back(k);
  for (auto& [k, _] : hybrid_presets()) v.push_back(k);
  for (auto& [k, _] : neox_presets()) v.push_back(k);
  return v;
}

std::unique_ptr<CausalLM> make_preset(const std::string& name, uint64_t seed, int64_t vocab) {
  if (auto nx = neox_presets().find(name); nx != neox_presets().end()) {
    GPTNeoXConfig c;
    c.num_hidden_layers = nx->second.layers;
    c.hidden_size = nx->second.hidden;
    c.num_attention_heads = nx->second.heads;
    c.intermediate_size = 4 * nx->second.hidden;
    c.vocab_size = vocab > 0 ? (vocab + 127) / 128 * 128 : nx->second.vocab;
    auto m = std::make_unique<GPTNeoXLM>(c);
    m->init_weights(seed);
    return m;
  }
  const auto hy = hybrid_presets().find(name);
  auto it = mamba_presets().find(hy != hybrid_presets().end() ? hy->second.base : name);
  MVL_CHECK(it != mamba_presets().end(), "unknown preset '", name,
            "' (known: ", join(preset_names()), ")");
  MambaConfig c;
  if (hy != hybrid_presets().end()) {
    for (int64_t i = hy->second.every - 1; i < it->second.layers; i += hy->second.every)
      c.attn_layer_idx.push_back(i);
    c.attn.num_heads = std::max<int64_t>(1, it->second.d_model / 64);
    c.attn.head_dim = it->second.d_model / c.attn.num_heads;
    c.attn.rotary_emb_dim = c.attn.head_dim / 2;
    c.attn.qkv_proj_bias = false;
    c.attn.out_proj_bias = false;
  }
  c.n_layer = it->second.layers;
  c.d_model = it->second.d_model;
  c.vocab_size = vocab > 0 ? (vocab + 7) / 8 * 8 : it->second.vocab;
  c.d_inner = 0;
  c.dt_rank = 0;
  auto m = std::make_unique<MambaLM>(c);
  m->init_weights(seed);
  return m;
}

}  // namespace mambavl::models
