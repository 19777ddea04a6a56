// Named VLM shapes for `mambavl init --preset` (random weights): tiny ones that train from scratch
// on 2 CPU cores in minutes, and the papers' real shapes.
#include <map>

#include "common/error.h"
#include "models/gpt_neox.h"
#include "models/mamba.h"
#include "models/mambaout.h"
#include "models/vit.h"
#include "models/vlm.h"

namespace mambavl::models {

namespace {

struct VlmShape {
  std::string family;
  std::string vision;  // "tiny-vit" | "tiny-mambaout" | a ViT encoder preset name
  int64_t image_size;
  std::string connector;  // "mlp" | "vss_mlp" | "vss_l2"
  std::string scan;
  std::string lm;  // "tiny-mamba" | "tiny-pythia" | "tiny-hybrid" | an LM preset shape name
};

// Shaking-Up: EVA-02-L/14 at 336 px + MLP; Mamba 790m / 1.4b / 2.8b vs Pythia 1b / 1.4b / 2.8b.
// VL-Mamba: SigLIP so400m/14 at 384 px + VSS-L2 (BSM) + Mamba 2.8b.
const std::map<std::string, VlmShape>& shapes() {
  static const std::map<std::string, VlmShape> m = {
      {"mamba-vl-tiny", {"mamba-vl", "tiny-vit", 64, "mlp", "bsm", "tiny-mamba"}},
      {"pythia-vl-tiny", {"pythia-vl", "tiny-vit", 64, "mlp", "bsm", "tiny-pythia"}},
      {"hybrid-vl-tiny", {"hybrid-vl", "tiny-vit", 64, "mlp", "bsm", "tiny-hybrid"}},
      {"vl-mamba-tiny", {"vl-mamba", "tiny-vit", 64, "vss_l2", "bsm", "tiny-mamba"}},
      {"mamba-vl-mambaout-tiny", {"mamba-vl", "tiny-mambaout", 128, "mlp", "bsm", "tiny-mamba"}},
      {"mamba-vl-790m", {"mamba-vl", "eva02-l14", 336, "mlp", "bsm", "mamba-790m"}},
      {"mamba-vl-1.4b", {"mamba-vl", "eva02-l14", 336, "mlp", "bsm", "mamba-1.4b"}},
      {"mamba-vl-2.8b", {"mamba-vl", "eva02-l14", 336, "mlp", "bsm", "mamba-2.8b"}},
      {"pythia-vl-1b", {"pythia-vl", "eva02-l14", 336, "mlp", "bsm", "pythia-1b"}},
      {"pythia-vl-1.4b", {"pythia-vl", "eva02-l14", 336, "mlp", "bsm", "pythia-1.4b"}},
      {"pythia-vl-2.8b", {"pythia-vl", "eva02-l14", 336, "mlp", "bsm", "pythia-2.8b"}},
      {"vl-mamba-2.8b", {"vl-mamba", "siglip-so400m-14", 384, "vss_l2", "bsm", "mamba-2.8b"}},
  };
  return m;
}

// Tiny encoders: a CLIP-layout ViT (64 px, patch 8 -> an 8 x 8 grid) or a MambaOut of narrow
// stages (128 px -> a 4 x 4 grid).
nlohmann::json vision_config(const std::string& name, int64_t image_size) {
  if (name == "tiny-vit") {
    ViTConfig c;
    c.layout = ViTLayout::CLIP;
    c.hidden_size = 128, c.num_layers = 4, c.num_heads = 4, c.intermediate_size = 512;
    c.patch_size = 8, c.image_size = image_size, c.hidden_act = "quick_gelu";
    return c.to_json();
  }
  if (name == "tiny-mambaout") {
    MambaOutConfig c = MambaOutConfig::preset("femto");
    c.variant = "";
    c.depths = {2, 2, 2, 2};
    c.dims = {32, 64, 96, 128};
    c.num_classes = 0;
    c.preprocess.size = image_size;
    return c.to_json();
  }
  return vit_encoder_preset_config(name, image_size).to_json();
}

nlohmann::json text_config(const std::string& name, int64_t vocab) {
  auto round8 = [](int64_t v) { return (v + 7) / 8 * 8; };
  if (name == "tiny-mamba" || name == "tiny-hybrid") {
    MambaConfig c;
    c.d_model = 256;
    c.n_layer = 8;
    c.vocab_size = round8(vocab);
    c.d_inner = 0, c.dt_rank = 0;
    if (name == "tiny-hybrid") {  // layer 3 of 8 is attention (about the Jamba ratio)
      c.attn_layer_idx = {3};
      c.attn.num_heads = 4;
      c.attn.rotary_emb_dim = 32;
      c.layout = "original";
      c.pad_vocab_size_multiple = 8;
      c.unpadded_vocab_size = c.vocab_size;
    }
    c.finalize();
    return MambaLM(c, /*initialize=*/false).save_config().to_json();
  }
  if (name == "tiny-pythia") {
    GPTNeoXConfig c;
    c.hidden_size = 256, c.num_hidden_layers = 4, c.num_attention_heads = 4;
    c.intermediate_size = 1024;
    c.vocab_size = round8(vocab);
    c.max_position_embeddings = 4096;
    c.finalize();
    return c.to_json();
  }
  // Paper shapes: the LM presets' configs.
  struct S {
    bool neox;
    int64_t layers, hidden, heads;
  };
  static const std::map<std::string, S> lm = {
      {"mamba-790m", {false, 48, 1536, 0}},  {"mamba-1.4b", {false, 48, 2048, 0}},
      {"mamba-2.8b", {false, 64, 2560, 0}},  {"pythia-1b", {true, 16, 2048, 8}},
      {"pythia-1.4b", {true, 24, 2048, 16}}, {"pythia-2.8b", {true, 32, 2560, 32}}};
  const S& s = lm.at(name);
  if (s.neox) {
    GPTNeoXConfig c;
    c.hidden_size = s.hidden, c.num_hidden_layers = s.layers, c.num_attention_heads = s.heads;
    c.intermediate_size = 4 * s.hidden;
    c.vocab_size = vocab > 0 ? (vocab + 127) / 128 * 128 : 50304;
    c.finalize();
    return c.to_json();
  }
  MambaConfig c;
  c.d_model = s.hidden, c.n_layer = s.layers;
  c.vocab_size = vocab > 0 ? round8(vocab) : 50280;
  c.d_inner = 0, c.dt_rank = 0;
  c.finalize();
  return c.to_json();
}

int64_t hidden_of(const nlohmann::json& text) {
  if (text.contains("hidden_size")) return text.at("hidden_size").get<int64_t>();
  return text.at("d_model").get<int64_t>();
}

}  // namespace

std::vector<std::string> vlm_preset_names() {
  std::vector<std::string> v;
  for (const auto& [k, _] : shapes()) v.push_back(k);
  return v;
}

bool is_vlm_preset(const std::string& name) { return shapes().count(name) != 0; }

VLMConfig vlm_preset(const std::string& name, int64_t vocab) {
  auto it = shapes().find(name);
  MVL_CHECK(it != shapes().end(), "unknown VLM preset '", name,
            "' (known: ", join(vlm_preset_names()), ")");
  const VlmShape& s = it->second;
  const bool tiny = s.lm.rfind("tiny-", 0) == 0;
  MVL_CHECK(!tiny || vocab > 0, "VLM preset '", name,
            "' needs a tokenizer (its vocabulary sets the embedding size): give --tokenizer, "
            "e.g. the tokenizer.json that `mambavl make-data scenes` writes");
  VLMConfig c;
  c.family = s.family;
  c.vision_config = vision_config(s.vision, s.image_size);
  c.text_config = text_config(s.lm, vocab);
  c.connector.type = s.connector;
  c.connector.scan = s.scan;
  c.connector.d_lm = hidden_of(c.text_config);
  if (s.vision == "tiny-vit")
    c.connector.d_vision = 128;
  else if (s.vision == "tiny-mambaout")
    c.connector.d_vision = 128;
  else
    c.connector.d_vision = vit_encoder_preset_config(s.vision, s.image_size).hidden_size;
  c.image_block = s.family == "vl-mamba" ? "plain" : "separator";
  c.image_size = s.image_size;
  // Shaking-Up takes EVA-02's last-layer features (timm's forward_features: with the default
  // global_pool "avg" there is no final norm over the tokens); VL-Mamba, as LLaVA, SigLIP's
  // penultimate layer. The tiny encoders are trained from scratch: last layer.
  if (s.vision == "siglip-so400m-14") c.vision_feature_layer = -2;
  c.validate("preset " + name);
  return c;
}

}  // namespace mambavl::models
