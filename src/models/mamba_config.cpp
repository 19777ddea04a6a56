// MambaConfig: both config.json dialects (Hugging Face MambaConfig and mamba_ssm's MambaConfig).
#include <cmath>

#include "models/config_util.h"
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
    "attn_layer_idx", "attn_cfg"};

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
                                          "dtype"};

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
    c.pad_vocab_size_multiple = cfg::get_int(j, "pad_vocab_size_multiple", file, 8);
    MVL_CHECK(c.pad_vocab_size_multiple >= 1, file, ": pad_vocab_size_multiple must be >= 1");
    c.unpadded_vocab_size = cfg::require_int(j, "vocab_size", file);
    const int64_t m = c.pad_vocab_size_multiple;
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
  try {
    c.finalize();
  } catch (const Error& e) {
    MVL_FAIL(file, ": ", e.what());
  }
  return c;
}

void MambaConfig::finalize() {
  MVL_CHECK(d_model > 0 && n_layer > 0 && vocab_size > 0,
            "d_model, n_layer and vocab_size must be > 0 (got ", d_model, ", ", n_layer, ", ",
            vocab_size, ")");
  MVL_CHECK(d_state > 0 && d_conv > 0 && expand > 0, "d_state, d_conv and expand must be > 0");
  if (d_inner <= 0) d_inner = expand * d_model;
  if (dt_rank <= 0) dt_rank = (d_model + 15) / 16;
  if (unpadded_vocab_size <= 0) unpadded_vocab_size = vocab_size;
  for (int64_t i : attn_layer_idx)
    MVL_CHECK(i >= 0 && i < n_layer, "attn_layer_idx entry ", i,
              " is out of range for n_layer = ", n_layer, " (valid: 0..", n_layer - 1, ")");
  if (!attn_layer_idx.empty()) {
    MVL_CHECK(attn.num_heads > 0, "attn_layer_idx is set but attn_cfg.num_heads is missing");
    if (attn.num_heads_kv <= 0) attn.num_heads_kv = attn.num_heads;
    if (attn.head_dim <= 0) {
      MVL_CHECK(d_model % attn.num_heads == 0, "d_model = ", d_model,
                " is not divisible by attn_cfg.num_heads = ", attn.num_heads);
      attn.head_dim = d_model / attn.num_heads;
    }
    MVL_CHECK(attn.num_heads % attn.num_heads_kv == 0,
              "attn_cfg.num_heads must be a multiple of num_heads_kv");
    MVL_CHECK(attn.rotary_emb_dim % 2 == 0 && attn.rotary_emb_dim <= attn.head_dim,
              "attn_cfg.rotary_emb_dim must be even and <= head_dim");
  }
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
  return j;
}

}  // namespace mambavl::models
