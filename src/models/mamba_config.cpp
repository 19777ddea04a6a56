// MambaConfig: both config.json dialects (Hugging Face MambaConfig and mamba_ssm's MambaConfig).
#include <cmath>

#include "io/config_util.h"
#include "models/lm_limits.h"
#include "models/mamba.h"

namespace mambavl::models {

namespace {

// Keys of transformers' MambaConfig (and the legacy keys found in the state-spaces *-hf configs)
// that carry no information for inference (initialisation, generation defaults, bookkeeping).
const std::set<std::string> kHfKnown = {
    "_name_or_path", "architectures", "bos_token_id", "chunk_size_feed_forward", "conv_kernel",
    "dtype", "torch_dtype", "eos_token_id", "expand", "hidden_act", "hidden_size", "id2label",
    "label2id", "initializer_range", "intermediate_size", "is_encoder_decoder",
    "layer_norm_epsilon", "model_type", "num_hidden_layers", "output_attentions",
    "output_hidden_states", "pad_token_id", "problem_type", "rescale_prenorm_residual",
    "residual_in_fp32", "return_dict", "state_size", "tie_word_embeddings", "time_step_floor",
    "time_step_init_scheme", "time_step_max", "time_step_min", "time_step_rank", "time_step_scale",
    "transformers_version", "use_associative_scan", "use_bias", "use_cache", "use_conv_bias",
    "use_mambapy", "vocab_size",
    // legacy keys in state-spaces/mamba-*-hf configs
    "n_layer", "d_model", "fused_add_norm", "rms_norm", "pad_vocab_size_multiple",
    // hybrid extension (mamba_ssm names)
    "attn_layer_idx", "attn_cfg", "quantization_config"};

const std::set<std::string> kOrigKnown = {"d_model",
                                          "d_intermediate",
                                          "n_layer",
                                          "vocab_size",
                                          "ssm_cfg",
                                          "attn_layer_idx",
                                          "attn_cfg",
                                          "rms_norm",
                                          "residual_in_fp32",
                                          "fused_add_norm",
                                          "pad_vocab_size_multiple",
                                          "tie_embeddings",
                                          "architectures",
                                          "model_type",
                                          "torch_dtype",
                                          "dtype",
                                          "quantization_config"};

const std::set<std::string> kSsmCfgKnown = {
    "d_state",  "d_conv",        "expand",    "dt_rank", "dt_min",        "dt_max", "dt_init",
    "dt_scale", "dt_init_floor", "conv_bias", "bias",    "use_fast_path", "layer"};

const std::set<std::string> kAttnCfgKnown = {
    "num_heads",     "num_heads_kv",   "head_dim",        "mlp_dim",
    "qkv_proj_bias", "out_proj_bias",  "softmax_scale",   "causal",
    "d_conv",        "rotary_emb_dim", "rotary_emb_base", "rotary_emb_interleaved"};

int64_t rank_value(const nlohmann::json& j, const std::string& key, const std::string& file) {
  if (!j.contains(key) || j.at(key).is_null()) return 0;
  const auto& v = j.at(key);
  if (v.is_string()) {
    MVL_CHECK(v.get<std::string>() == "auto", file, ": key '", key,
              "' must be an integer or \"auto\", got ", v.dump());
    return 0;
  }
  return cfg::get_int(j, key, file, 0);
}

void parse_hybrid(MambaConfig& c, const nlohmann::json& j, const std::string& file) {
  if (j.contains("attn_layer_idx") && !j.at("attn_layer_idx").is_null()) {
    const auto& v = j.at("attn_layer_idx");
    MVL_CHECK(v.is_array(), file, ": key 'attn_layer_idx' must be a list of layer indices");
    for (const auto& e : v) {
      MVL_CHECK(e.is_number_integer(), file, ": 'attn_layer_idx' entries must be integers, got ",
                e.dump());
      c.attn_layer_idx.push_back(e.get<int64_t>());
    }
  }
  if (j.contains("attn_cfg") && !j.at("attn_cfg").is_null()) {
    const auto& a = j.at("attn_cfg");
    cfg::check_known_keys(a, kAttnCfgKnown, file, "'attn_cfg'");
    c.attn.num_heads = cfg::get_int(a, "num_heads", file, 0);
    c.attn.num_heads_kv = cfg::get_int(a, "num_heads_kv", file, 0);
    c.attn.head_dim = cfg::get_int(a, "head_dim", file, 0);
    c.attn.rotary_emb_dim = cfg::get_int(a, "rotary_emb_dim", file, 0);
    c.attn.rotary_emb_base = cfg::get_double(a, "rotary_emb_base", file, 10000.0);
    c.attn.causal = cfg::get_bool(a, "causal", file, true);
    c.attn.qkv_proj_bias = cfg::get_bool(a, "qkv_proj_bias", file, true);
    c.attn.out_proj_bias = cfg::get_bool(a, "out_proj_bias", file, true);
    MVL_CHECK(cfg::get_int(a, "mlp_dim", file, 0) == 0, file,
              ": attn_cfg.mlp_dim > 0 (gated MLP inside attention) is not supported");
    MVL_CHECK(cfg::get_int(a, "d_conv", file, 0) == 0, file,
              ": attn_cfg.d_conv > 0 (conv inside attention) is not supported");
    MVL_CHECK(!cfg::get_bool(a, "rotary_emb_interleaved", file, false), file,
              ": attn_cfg.rotary_emb_interleaved = true is not supported");
    MVL_CHECK(!a.contains("softmax_scale") || a.at("softmax_scale").is_null(), file,
              ": attn_cfg.softmax_scale other than the default 1/sqrt(head_dim) is not supported");
  }
}

}  // namespace

MambaConfig MambaConfig::from_json(const nlohmann::json& j, const std::string& file) {
  MVL_CHECK(j.is_object(), file, ": config must be a JSON object");
  MambaConfig c;
  c.d_inner = 0;
  c.dt_rank = 0;
  const bool original = j.contains("d_model") && !j.contains("hidden_size");
  if (original) {
    cfg::check_known_keys(j, kOrigKnown, file);
    c.layout = "original";
    c.d_model = cfg::require_int(j, "d_model", file);
    c.n_layer = cfg::require_int(j, "n_layer", file);
    c.pad_vocab_size_multiple = cfg::get_int_in(j, "pad_vocab_size_multiple", file, 8, 1,
                                                LMLimits::kMaxPadMultiple);
    c.unpadded_vocab_size = cfg::require_int(j, "vocab_size", file);
    cfg::check_limit(c.unpadded_vocab_size, 1, LMLimits::kMaxVocab, file, "vocab_size");
    const int64_t m = c.pad_vocab_size_multiple;  // both bounded: no overflow below
    c.vocab_size = (c.unpadded_vocab_size + m - 1) / m * m;
    c.tie_embeddings = cfg::get_bool(j, "tie_embeddings", file, true);
    MVL_CHECK(cfg::get_int(j, "d_intermediate", file, 0) == 0, file,
              ": d_intermediate > 0 (an MLP after each mixer) is not supported");
    MVL_CHECK(cfg::get_bool(j, "rms_norm", file, true), file,
              ": rms_norm = false (LayerNorm blocks) is not supported");
    if (j.contains("ssm_cfg") && !j.at("ssm_cfg").is_null()) {
      const auto& s = j.at("ssm_cfg");
      cfg::check_known_keys(s, kSsmCfgKnown, file, "'ssm_cfg'");
      const std::string layer = cfg::get_string(s, "layer", file, "Mamba1");
      MVL_CHECK(layer == "Mamba1", file, ": ssm_cfg.layer = '", layer,
                "' is not supported (only Mamba1)");
      c.d_state = cfg::get_int(s, "d_state", file, 16);
      c.d_conv = cfg::get_int(s, "d_conv", file, 4);
      c.expand = cfg::get_int(s, "expand", file, 2);
      c.dt_rank = rank_value(s, "dt_rank", file);
      c.conv_bias = cfg::get_bool(s, "conv_bias", file, true);
      c.bias = cfg::get_bool(s, "bias", file, false);
    }
    c.norm_eps = 1e-5;
  } else {
    cfg::check_known_keys(j, kHfKnown, file);
    const std::string mt = cfg::get_string(j, "model_type", file, "mamba");
    MVL_CHECK(mt == "mamba", file, ": model_type '", mt, "' is not a Mamba model");
    c.layout = "hf";
    c.d_model = cfg::require_int(j, "hidden_size", file);
    c.n_layer = cfg::require_int(j, "num_hidden_layers", file);
    if (j.contains("n_layer"))
      MVL_CHECK(cfg::get_int(j, "n_layer", file, c.n_layer) == c.n_layer, file,
                ": n_layer and num_hidden_layers disagree");
    c.vocab_size = cfg::require_int(j, "vocab_size", file);
    c.unpadded_vocab_size = c.vocab_size;
    c.d_state = cfg::get_int(j, "state_size", file, 16);
    c.d_conv = cfg::get_int(j, "conv_kernel", file, 4);
    c.expand = cfg::get_int(j, "expand", file, 2);
    c.d_inner = cfg::get_int(j, "intermediate_size", file, 0);
    c.dt_rank = rank_value(j, "time_step_rank", file);
    c.bias = cfg::get_bool(j, "use_bias", file, false);
    c.conv_bias = cfg::get_bool(j, "use_conv_bias", file, true);
    c.norm_eps = cfg::get_double(j, "layer_norm_epsilon", file, 1e-5);
    c.tie_embeddings = cfg::get_bool(j, "tie_word_embeddings", file, true);
    const std::string act = cfg::get_string(j, "hidden_act", file, "silu");
    MVL_CHECK(act == "silu", file, ": hidden_act '", act, "' is not supported (Mamba uses silu)");
    MVL_CHECK(cfg::get_bool(j, "rms_norm", file, true), file,
              ": rms_norm = false (LayerNorm blocks) is not supported");
  }
  parse_hybrid(c, j, file);
  c.quantization = read_quantization(j, file);
  try {
    c.finalize();
  } catch (const Error& e) {
    MVL_FAIL(file, ": ", e.what());
  }
  return c;
}

namespace {

// The key names of `layout` ("hf": transformers' MambaConfig; "original": mamba_ssm's), for
// messages.
struct FieldNames {
  const char *d_model, *n_layer, *vocab, *d_state, *d_conv, *expand, *d_inner, *dt_rank;
};
const FieldNames& field_names(const std::string& layout) {
  static const FieldNames hf{"hidden_size", "num_hidden_layers", "vocab_size",
                             "state_size",  "conv_kernel",       "expand",
                             "intermediate_size", "time_step_rank"};
  static const FieldNames orig{"d_model",         "n_layer",        "vocab_size",
                               "ssm_cfg.d_state", "ssm_cfg.d_conv", "ssm_cfg.expand",
                               "ssm_cfg.expand × d_model", "ssm_cfg.dt_rank"};
  return layout == "original" ? orig : hf;
}

// Error (without the file: from_json adds it) unless lo <= v <= hi.
void limit(int64_t v, int64_t lo, int64_t hi, const std::string& field) {
  MVL_CHECK(v <= hi, field, " ", v, " is over the limit of ", hi);
  MVL_CHECK(v >= lo, field, " ", v, " must be at least ", lo);
}

}  // namespace

void MambaConfig::finalize() {
  const FieldNames& f = field_names(layout);
  using L = LMLimits;
  // Every size is bounded before anything is derived from it (no overflow below).
  limit(d_model, 1, L::kMaxHidden, f.d_model);
  limit(n_layer, 1, L::kMaxLayers, f.n_layer);
  // (mamba_ssm's layout: vocab_size rounded up to pad_vocab_size_multiple, both bounded)
  limit(vocab_size, 1, L::kMaxVocab + (layout == "original" ? L::kMaxPadMultiple : 0), f.vocab);
  limit(d_state, 1, L::kMaxDState, f.d_state);
  limit(d_conv, 1, L::kMaxDConv, f.d_conv);
  limit(expand, 1, L::kMaxExpand, f.expand);
  limit(d_inner, 0, L::kMaxIntermediate, f.d_inner);
  limit(dt_rank, 0, L::kMaxDtRank, f.dt_rank);
  if (d_inner <= 0) d_inner = expand * d_model;
  limit(d_inner, 1, L::kMaxIntermediate,
        layout == "original" ? "d_inner (ssm_cfg.expand × d_model)"
                             : "intermediate_size (expand × hidden_size)");
  if (dt_rank <= 0) dt_rank = (d_model + 15) / 16;
  if (unpadded_vocab_size <= 0) unpadded_vocab_size = vocab_size;
  MVL_CHECK(static_cast<int64_t>(attn_layer_idx.size()) <= n_layer, "attn_layer_idx has ",
            attn_layer_idx.size(), " entries, more than the ", n_layer, " layers (", f.n_layer,
            ")");
  for (int64_t i : attn_layer_idx)
    MVL_CHECK(i >= 0 && i < n_layer, "attn_layer_idx entry ", i,
              " is out of range for n_layer = ", n_layer, " (valid: 0..", n_layer - 1, ")");
  if (!attn_layer_idx.empty()) {
    MVL_CHECK(attn.num_heads > 0, "attn_layer_idx is set but attn_cfg.num_heads is missing");
    limit(attn.num_heads, 1, L::kMaxHeads, "attn_cfg.num_heads");
    limit(attn.num_heads_kv, 0, L::kMaxHeads, "attn_cfg.num_heads_kv");
    limit(attn.head_dim, 0, L::kMaxHeadDim, "attn_cfg.head_dim");
    if (attn.num_heads_kv <= 0) attn.num_heads_kv = attn.num_heads;
    if (attn.head_dim <= 0) {
      MVL_CHECK(d_model % attn.num_heads == 0, "d_model = ", d_model,
                " is not divisible by attn_cfg.num_heads = ", attn.num_heads);
      attn.head_dim = d_model / attn.num_heads;
    }
    limit(attn.head_dim, 1, L::kMaxHeadDim, "attn_cfg.head_dim (d_model / num_heads)");
    MVL_CHECK(attn.num_heads % attn.num_heads_kv == 0,
              "attn_cfg.num_heads must be a multiple of num_heads_kv");
    MVL_CHECK(attn.rotary_emb_dim >= 0 && attn.rotary_emb_dim % 2 == 0 &&
                  attn.rotary_emb_dim <= attn.head_dim,
              "attn_cfg.rotary_emb_dim must be even, >= 0 and <= head_dim");
  }
  const double n = num_parameters();
  MVL_CHECK(n <= L::kMaxParameters, "the config describes ", n, " parameters (", f.d_model, " ",
            d_model, ", ", f.n_layer, " ", n_layer, ", ", f.vocab, " ", vocab_size, ", ",
            f.d_inner, " ", d_inner, "), over the limit of ", L::kMaxParameters);
}

double MambaConfig::num_parameters() const {
  const double d = static_cast<double>(d_model), V = static_cast<double>(vocab_size);
  const double Di = static_cast<double>(d_inner), N = static_cast<double>(d_state);
  const double R = static_cast<double>(dt_rank), W = static_cast<double>(d_conv);
  double n = V * d * (tie_embeddings ? 1 : 2) + d;  // embeddings (+ lm_head), norm_f
  // MambaMixerImpl: in_proj, conv1d, x_proj, dt_proj, A_log, D, out_proj.
  const double mixer = 2 * Di * d + (bias ? 2 * Di : 0) + Di * W + (conv_bias ? Di : 0) +
                       (R + 2 * N) * Di + R * Di + Di + Di * N + Di + Di * d + (bias ? d : 0);
  double attn_mixer = 0;
  if (!attn_layer_idx.empty()) {  // HybridAttentionImpl: in_proj (q, k, v), out_proj
    const double qkv = static_cast<double>(attn.num_heads + 2 * attn.num_heads_kv) *
                       static_cast<double>(attn.head_dim);
    const double o = static_cast<double>(attn.num_heads * attn.head_dim);
    attn_mixer = qkv * d + (attn.qkv_proj_bias ? qkv : 0) + o * d + (attn.out_proj_bias ? d : 0);
  }
  for (int64_t i = 0; i < n_layer; ++i) n += d + (is_attention_layer(i) ? attn_mixer : mixer);
  return n;
}

ExpectedWeights MambaConfig::expected_weights(const std::string& fields) const {
  const FieldNames& f = field_names(layout);
  const std::string dm = fields + f.d_model, V = fields + f.vocab, Di = fields + f.d_inner;
  const std::string N = fields + f.d_state, W = fields + f.d_conv, R = fields + f.dt_rank;
  ExpectedWeights w;
  w.num_parameters = num_parameters();
  const ExpectedDim rows =
      layout == "original" ? dim(vocab_size, V, V + " rounded up to a multiple of " + fields +
                                                    "pad_vocab_size_multiple")
                           : dim(vocab_size, V);
  w.tensor({"backbone.embeddings.weight", "backbone.embedding.weight"}, {rows, dim(d_model, dm)});
  if (!tie_embeddings) w.tensor({"lm_head.weight"}, {rows, dim(d_model, dm)});
  w.layer_count({"backbone.layers."}, n_layer, fields + f.n_layer);
  int64_t first_mamba = -1, first_attn = -1;
  for (int64_t i = 0; i < n_layer; ++i) {
    int64_t& first = is_attention_layer(i) ? first_attn : first_mamba;
    if (first < 0) first = i;
  }
  if (first_mamba >= 0) {
    const std::string p = "backbone.layers." + std::to_string(first_mamba) + ".mixer.";
    w.tensor({p + "in_proj.weight"}, {dim(2 * d_inner, Di, "2 × " + Di), dim(d_model, dm)});
    w.tensor({p + "conv1d.weight"}, {dim(d_inner, Di), fixed(1), dim(d_conv, W)});
    // dt_proj and A_log before x_proj, whose first dimension mixes both fields.
    w.tensor({p + "dt_proj.weight"}, {dim(d_inner, Di), dim(dt_rank, R)});
    w.tensor({p + "A_log"}, {dim(d_inner, Di), dim(d_state, N)});
    w.tensor({p + "x_proj.weight"},
             {dim(dt_rank + 2 * d_state, R, R + " + 2 × " + N), dim(d_inner, Di)});
    w.tensor({p + "out_proj.weight"}, {dim(d_model, dm), dim(d_inner, Di)});
  }
  if (first_attn >= 0) {
    const std::string p = "backbone.layers." + std::to_string(first_attn) + ".mixer.";
    const std::string H = fields + "attn_cfg.num_heads", Hkv = fields + "attn_cfg.num_heads_kv",
                      hd = fields + "attn_cfg.head_dim";
    w.tensor({p + "in_proj.weight"},
             {dim((attn.num_heads + 2 * attn.num_heads_kv) * attn.head_dim, H,
                  "(" + H + " + 2 × " + Hkv + ") × " + hd),
              dim(d_model, dm)});
    w.tensor({p + "out_proj.weight"},
             {dim(d_model, dm), dim(attn.num_heads * attn.head_dim, H, H + " × " + hd)});
  }
  return w;
}

bool MambaConfig::is_attention_layer(int64_t i) const {
  for (int64_t a : attn_layer_idx)
    if (a == i) return true;
  return false;
}

nlohmann::json MambaConfig::to_json() const {
  nlohmann::json j;
  nlohmann::json attn_cfg;
  if (!attn_layer_idx.empty()) {
    attn_cfg = {{"num_heads", attn.num_heads},
                {"num_heads_kv", attn.num_heads_kv},
                {"head_dim", attn.head_dim},
                {"rotary_emb_dim", attn.rotary_emb_dim},
                {"rotary_emb_base", attn.rotary_emb_base},
                {"causal", attn.causal},
                {"qkv_proj_bias", attn.qkv_proj_bias},
                {"out_proj_bias", attn.out_proj_bias}};
  }
  if (layout == "original") {
    j["d_model"] = d_model;
    j["d_intermediate"] = 0;
    j["n_layer"] = n_layer;
    j["vocab_size"] = unpadded_vocab_size;
    j["ssm_cfg"] = {{"layer", "Mamba1"}, {"d_state", d_state}, {"d_conv", d_conv},
                    {"expand", expand},  {"dt_rank", dt_rank}, {"conv_bias", conv_bias},
                    {"bias", bias}};
    j["attn_layer_idx"] = attn_layer_idx;
    j["attn_cfg"] = attn_cfg.is_null() ? nlohmann::json::object() : attn_cfg;
    j["rms_norm"] = true;
    j["residual_in_fp32"] = true;
    j["fused_add_norm"] = true;
    j["pad_vocab_size_multiple"] = pad_vocab_size_multiple;
    j["tie_embeddings"] = tie_embeddings;
  } else {
    j["architectures"] = {"MambaForCausalLM"};
    j["model_type"] = "mamba";
    j["hidden_size"] = d_model;
    j["num_hidden_layers"] = n_layer;
    j["vocab_size"] = vocab_size;
    j["state_size"] = d_state;
    j["conv_kernel"] = d_conv;
    j["expand"] = expand;
    j["intermediate_size"] = d_inner;
    j["time_step_rank"] = dt_rank;
    j["use_bias"] = bias;
    j["use_conv_bias"] = conv_bias;
    j["layer_norm_epsilon"] = norm_eps;
    j["tie_word_embeddings"] = tie_embeddings;
    j["hidden_act"] = "silu";
    j["residual_in_fp32"] = true;
    j["bos_token_id"] = 0;
    j["eos_token_id"] = 0;
    j["pad_token_id"] = 0;
    if (!attn_layer_idx.empty()) {
      j["attn_layer_idx"] = attn_layer_idx;
      j["attn_cfg"] = attn_cfg;
    }
  }
  if (quantization == "int8")
    j["quantization_config"] = int8_quantization_config(
        "every Mamba mixer's in_proj, x_proj, dt_proj, out_proj; lm_head, or the embedding table "
        "when it is tied to the head");
  return j;
}

}  // namespace mambavl::models
