// ViT config.json parsing and writing: Hugging Face CLIP / SigLIP (vision-only or full model)
// and timm's hub format for EVA-02 (see vit.h for the unknown-key policy).
#include <cmath>
#include <set>

#include "common/error.h"
#include "io/config_util.h"
#include "models/vit.h"

namespace mambavl::models {

std::string to_string(ViTLayout l) {
  switch (l) {
    case ViTLayout::CLIP:
      return "clip";
    case ViTLayout::SigLIP:
      return "siglip";
    case ViTLayout::EVA02:
      return "eva02";
  }
  return "?";
}

namespace {

// transformers PretrainedConfig bookkeeping and generation defaults (4.x and 5.x; old CLIP
// checkpoints repeat all of them inside vision_config). They carry nothing for the encoder.
const std::set<std::string> kHFGeneric = {"_attn_implementation_autoset",
                                          "_commit_hash",
                                          "_name_or_path",
                                          "add_cross_attention",
                                          "architectures",
                                          "bad_words_ids",
                                          "begin_suppress_tokens",
                                          "bos_token_id",
                                          "chunk_size_feed_forward",
                                          "cross_attention_hidden_size",
                                          "decoder_start_token_id",
                                          "diversity_penalty",
                                          "do_sample",
                                          "dtype",
                                          "early_stopping",
                                          "encoder_no_repeat_ngram_size",
                                          "eos_token_id",
                                          "exponential_decay_length_penalty",
                                          "finetuning_task",
                                          "forced_bos_token_id",
                                          "forced_eos_token_id",
                                          "gradient_checkpointing",
                                          "id2label",
                                          "is_decoder",
                                          "is_encoder_decoder",
                                          "label2id",
                                          "length_penalty",
                                          "max_length",
                                          "min_length",
                                          "no_repeat_ngram_size",
                                          "num_beam_groups",
                                          "num_beams",
                                          "num_return_sequences",
                                          "output_attentions",
                                          "output_hidden_states",
                                          "output_scores",
                                          "pad_token_id",
                                          "prefix",
                                          "problem_type",
                                          "pruned_heads",
                                          "remove_invalid_values",
                                          "repetition_penalty",
                                          "return_dict",
                                          "return_dict_in_generate",
                                          "sep_token_id",
                                          "suppress_tokens",
                                          "task_specific_params",
                                          "temperature",
                                          "tf_legacy_loss",
                                          "tie_encoder_decoder",
                                          "tie_word_embeddings",
                                          "tokenizer_class",
                                          "top_k",
                                          "top_p",
                                          "torch_dtype",
                                          "torchscript",
                                          "transformers_version",
                                          "typical_p",
                                          "use_bfloat16",
                                          "use_cache"};

// CLIPVisionConfig / SiglipVisionConfig fields (plus our "causal"). Dropouts and initialisers do
// not change inference.
const std::set<std::string> kHFVision = {"attention_dropout",
                                         "causal",
                                         "dropout",
                                         "hidden_act",
                                         "hidden_size",
                                         "image_size",
                                         "initializer_factor",
                                         "initializer_range",
                                         "intermediate_size",
                                         "layer_norm_eps",
                                         "model_type",
                                         "num_attention_heads",
                                         "num_channels",
                                         "num_hidden_layers",
                                         "patch_size",
                                         "projection_dim",
                                         "vision_use_head"};

// CLIPConfig / SiglipConfig top level.
const std::set<std::string> kHFFull = {
    "causal",           "initializer_factor", "logit_scale_init_value",
    "model_type",       "projection_dim",     "text_config",
    "text_config_dict", "vision_config",      "vision_config_dict"};

std::set<std::string> with_generic(const std::set<std::string>& s) {
  std::set<std::string> out = kHFGeneric;
  out.insert(s.begin(), s.end());
  return out;
}

void parse_hf_vision(ViTConfig& c, const nlohmann::json& j, const std::string& file,
                     const std::string& where) {
  cfg::check_known_keys(j, with_generic(kHFVision), file, where);
  const bool siglip = c.layout == ViTLayout::SigLIP;
  const std::string want_mt = siglip ? "siglip_vision_model" : "clip_vision_model";
  const std::string mt = cfg::get_string(j, "model_type", file, want_mt);
  MVL_CHECK(mt == want_mt, file, ": ", where.empty() ? "" : where + ": ", "key 'model_type' is '",
            mt, "', expected \"", want_mt, "\"");
  // Defaults are transformers' CLIPVisionConfig / SiglipVisionConfig defaults.
  c.hidden_size = cfg::get_int(j, "hidden_size", file, 768);
  c.intermediate_size = cfg::get_int(j, "intermediate_size", file, 3072);
  c.num_layers = cfg::get_int(j, "num_hidden_layers", file, 12);
  c.num_heads = cfg::get_int(j, "num_attention_heads", file, 12);
  c.image_size = cfg::get_int(j, "image_size", file, 224);
  c.patch_size = cfg::get_int(j, "patch_size", file, siglip ? 16 : 32);
  c.layer_norm_eps = cfg::get_double(j, "layer_norm_eps", file, siglip ? 1e-6 : 1e-5);
  c.hidden_act =
      cfg::get_string(j, "hidden_act", file, siglip ? "gelu_pytorch_tanh" : "quick_gelu");
  const int64_t ch = cfg::get_int(j, "num_channels", file, 3);
  MVL_CHECK(ch == 3, file, ": key 'num_channels' = ", ch, "; only RGB (3) is supported");
  if (j.contains("pruned_heads") && !j.at("pruned_heads").is_null())
    MVL_CHECK(j.at("pruned_heads").empty(), file, ": key 'pruned_heads' is not empty; pruned ",
              "attention heads are not supported");
  c.causal = cfg::get_bool(j, "causal", file, c.causal);
}

ViTConfig parse_hf(const nlohmann::json& j, const std::string& file, const std::string& mt) {
  ViTConfig c;
  if (mt == "clip_vision_model" || mt == "siglip_vision_model") {
    c.layout = mt == "clip_vision_model" ? ViTLayout::CLIP : ViTLayout::SigLIP;
    parse_hf_vision(c, j, file, "");
    return c;
  }
  c.layout = mt == "clip" ? ViTLayout::CLIP : ViTLayout::SigLIP;
  cfg::check_known_keys(j, with_generic(kHFFull), file);
  nlohmann::json v = j.contains("vision_config") && !j.at("vision_config").is_null()
                         ? j.at("vision_config")
                         : nlohmann::json::object();
  MVL_CHECK(v.is_object(), file, ": key 'vision_config' must be an object");
  // Legacy CLIP folders: vision_config_dict overrides vision_config (as CLIPConfig does).
  if (j.contains("vision_config_dict") && !j.at("vision_config_dict").is_null()) {
    MVL_CHECK(j.at("vision_config_dict").is_object(), file,
              ": key 'vision_config_dict' must be an object");
    for (auto it = j.at("vision_config_dict").begin(); it != j.at("vision_config_dict").end(); ++it)
      v[it.key()] = it.value();
  }
  parse_hf_vision(c, v, file, "vision_config");
  c.causal = cfg::get_bool(j, "causal", file, c.causal);
  return c;
}

// ---- timm EVA-02 ----

struct EvaPreset {
  const char* name;
  int64_t img, patch, dim, depth, heads;
  bool scale_attn_inner;
  const char* global_pool;
};

// timm 1.0.31 eva.py: the EVA-02 models with separate q/k/v and SwiGLU + sub-LN (scale_mlp);
// all have mlp_ratio 4 * 2 / 3 and ref_feat_shape (16, 16).
const EvaPreset kEvaPresets[] = {
    {"eva02_base_patch14_224", 224, 14, 768, 12, 12, false, "avg"},
    {"eva02_base_patch14_448", 448, 14, 768, 12, 12, false, "avg"},
    {"eva02_large_patch14_224", 224, 14, 1024, 24, 16, false, "avg"},
    {"eva02_large_patch14_448", 448, 14, 1024, 24, 16, false, "avg"},
    {"eva02_base_patch16_clip_224", 224, 16, 768, 12, 12, true, "token"},
    {"eva02_large_patch14_clip_224", 224, 14, 1024, 24, 16, true, "token"},
    {"eva02_large_patch14_clip_336", 336, 14, 1024, 24, 16, true, "token"},
};

const std::set<std::string> kTimmTop = {"architecture",       "causal",       "global_pool",
                                        "label_descriptions", "label_names",  "model_args",
                                        "num_classes",        "num_features", "pretrained_cfg"};

// model_args that must keep the EVA-02 B/L value (anything else is a different network).
const std::vector<std::pair<std::string, nlohmann::json>> kEvaFixed = {
    {"qkv_fused", false},         {"qkv_bias", true},
    {"swiglu_mlp", true},         {"scale_mlp", true},
    {"use_rot_pos_emb", true},    {"use_abs_pos_emb", true},
    {"class_token", true},        {"init_values", nullptr},
    {"num_reg_tokens", 0},        {"no_embed_class", false},
    {"rope_type", "cat"},         {"rope_grid_offset", 0},
    {"rope_grid_indexing", "ij"}, {"rope_rotate_half", false},
    {"use_post_norm", false},     {"use_pre_transformer_norm", false},
    {"qk_norm", false},           {"attn_type", "eva"},
    {"swiglu_align_to", 0},       {"in_chans", 3},
    {"use_fc_norm", nullptr},     {"use_post_transformer_norm", nullptr},
    {"num_kv_heads", nullptr},    {"dynamic_img_pad", false},
    {"gated_attn", false}};

// model_args read below, or that only matter for training / timm's bookkeeping.
const std::set<std::string> kEvaArgs = {
    "img_size",         "patch_size",     "embed_dim",        "depth",           "num_heads",
    "mlp_ratio",        "ref_feat_shape", "scale_attn_inner", "global_pool",     "num_classes",
    "rope_temperature", "drop_rate",      "pos_drop_rate",    "patch_drop_rate", "proj_drop_rate",
    "attn_drop_rate",   "drop_path_rate", "dynamic_img_size", "head_init_scale"};

bool json_equal_num(const nlohmann::json& a, const nlohmann::json& b) {
  if (a.is_number() && b.is_number()) return a.get<double>() == b.get<double>();
  return a == b;
}

// An int or a square [h, w] pair.
int64_t square_size(const nlohmann::json& v, const std::string& file, const std::string& key) {
  if (v.is_number_integer()) return v.get<int64_t>();
  MVL_CHECK(v.is_array() && v.size() == 2 && v[0].is_number_integer() && v[1].is_number_integer() &&
                v[0] == v[1],
            file, ": key '", key, "' must be an integer or a square [h, w] pair, got ", v.dump());
  return v[0].get<int64_t>();
}

std::array<double, 3> triple(const nlohmann::json& v, const std::string& file,
                             const std::string& key) {
  MVL_CHECK(
      v.is_array() && v.size() == 3 && v[0].is_number() && v[1].is_number() && v[2].is_number(),
      file, ": key '", key, "' must be a list of 3 numbers, got ", v.dump());
  return {v[0].get<double>(), v[1].get<double>(), v[2].get<double>()};
}

ViTConfig parse_timm(const nlohmann::json& j, const std::string& file, const std::string& arch) {
  cfg::check_known_keys(j, kTimmTop, file);
  const EvaPreset* p = nullptr;
  for (const auto& e : kEvaPresets)
    if (arch == e.name) p = &e;
  if (!p) {
    std::vector<std::string> names;
    for (const auto& e : kEvaPresets) names.emplace_back(e.name);
    MVL_FAIL(file, ": architecture '", arch, "' is not supported (EVA-02 models with separate ",
             "q/k/v and SwiGLU + sub-LN: ", join(names), "; eva02_tiny / eva02_small use a fused ",
             "qkv and packed SwiGLU, which mambavl does not implement)");
  }
  ViTConfig c;
  c.layout = ViTLayout::EVA02;
  c.timm_arch = arch;
  c.image_size = p->img;
  c.patch_size = p->patch;
  c.hidden_size = p->dim;
  c.num_layers = p->depth;
  c.num_heads = p->heads;
  c.scale_attn_inner = p->scale_attn_inner;
  c.global_pool = p->global_pool;
  c.layer_norm_eps = 1e-6;  // timm.layers.LayerNorm
  c.hidden_act = "swiglu";
  c.global_pool = cfg::get_string(j, "global_pool", file, c.global_pool);
  if (j.contains("model_args") && !j.at("model_args").is_null()) {
    const auto& a = j.at("model_args");
    MVL_CHECK(a.is_object(), file, ": key 'model_args' must be an object");
    std::set<std::string> known = kEvaArgs;
    for (const auto& [k, v] : kEvaFixed) known.insert(k);
    cfg::check_known_keys(a, known, file, "'model_args'");
    for (const auto& [k, want] : kEvaFixed)
      if (a.contains(k))
        MVL_CHECK(json_equal_num(a.at(k), want), file, ": model_args.", k, " = ", a.at(k).dump(),
                  " is not supported (EVA-02 B/L use ", want.dump(), ")");
    if (a.contains("img_size")) c.image_size = square_size(a.at("img_size"), file, "img_size");
    if (a.contains("patch_size"))
      c.patch_size = square_size(a.at("patch_size"), file, "patch_size");
    c.hidden_size = cfg::get_int(a, "embed_dim", file, c.hidden_size);
    c.num_layers = cfg::get_int(a, "depth", file, c.num_layers);
    c.num_heads = cfg::get_int(a, "num_heads", file, c.num_heads);
    c.mlp_ratio = cfg::get_double(a, "mlp_ratio", file, c.mlp_ratio);
    c.scale_attn_inner = cfg::get_bool(a, "scale_attn_inner", file, c.scale_attn_inner);
    c.global_pool = cfg::get_string(a, "global_pool", file, c.global_pool);
    c.rope_temperature = cfg::get_double(a, "rope_temperature", file, c.rope_temperature);
    if (a.contains("ref_feat_shape") && !a.at("ref_feat_shape").is_null()) {
      const auto& r = a.at("ref_feat_shape");
      if (r.is_number_integer()) {
        c.ref_feat_shape = {r.get<int64_t>(), r.get<int64_t>()};
      } else {
        MVL_CHECK(
            r.is_array() && r.size() == 2 && r[0].is_number_integer() && r[1].is_number_integer(),
            file, ": model_args.ref_feat_shape must be an integer or [h, w], got ", r.dump());
        c.ref_feat_shape = {r[0].get<int64_t>(), r[1].get<int64_t>()};
      }
    }
  }
  // int() as timm; the product is bounded first (a double past int64 does not convert).
  const double mlp = static_cast<double>(c.hidden_size) * c.mlp_ratio;
  MVL_CHECK(std::isfinite(mlp) && mlp >= 1 &&
                mlp <= static_cast<double>(ViTConfig::kMaxIntermediate),
            file, ": model_args.mlp_ratio ", c.mlp_ratio, " gives an MLP size int(embed_dim × ",
            "mlp_ratio) = ", mlp, " outside [1, ", ViTConfig::kMaxIntermediate, "]");
  c.intermediate_size = static_cast<int64_t>(mlp);
  if (j.contains("pretrained_cfg") && !j.at("pretrained_cfg").is_null()) {
    // timm's pretrained_cfg has many descriptive keys; only mean / std matter here.
    const auto& pc = j.at("pretrained_cfg");
    MVL_CHECK(pc.is_object(), file, ": key 'pretrained_cfg' must be an object");
    if (pc.contains("mean")) c.mean = triple(pc.at("mean"), file, "pretrained_cfg.mean");
    if (pc.contains("std")) c.std = triple(pc.at("std"), file, "pretrained_cfg.std");
  }
  c.causal = cfg::get_bool(j, "causal", file, false);
  return c;
}

}  // namespace

namespace {

// Key names for messages: Hugging Face CLIP / SigLIP, or timm's model_args (EVA-02).
struct ViTFields {
  std::string hidden, mlp, layers, image, patch;
};
ViTFields vit_fields(ViTLayout layout, const std::string& layers_key) {
  ViTFields f = layout == ViTLayout::EVA02
                    ? ViTFields{"model_args.embed_dim", "model_args.mlp_ratio",
                                "model_args.depth", "model_args.img_size", "model_args.patch_size"}
                    : ViTFields{"hidden_size", "intermediate_size", "num_hidden_layers",
                                "image_size", "patch_size"};
  if (!layers_key.empty()) f.layers = layers_key;
  return f;
}

}  // namespace

void ViTConfig::validate(const std::string& file, const std::string& layers_key) const {
  const ViTFields f = vit_fields(layout, layers_key);
  // Bounds far above any real model, checked before anything is allocated, so that a corrupt or
  // hostile config is an error rather than an out-of-memory kill.
  cfg::check_limit(hidden_size, 1, kMaxHidden, file, f.hidden);
  cfg::check_limit(num_layers, 1, kMaxLayers, file, f.layers);
  cfg::check_limit(intermediate_size, 1, kMaxIntermediate, file,
                   layout == ViTLayout::EVA02 ? "MLP size int(embed_dim × mlp_ratio)" : f.mlp);
  cfg::check_limit(image_size, 1, kMaxImageSize, file, f.image);
  MVL_CHECK(num_heads > 0 && hidden_size % num_heads == 0, file, ": number of attention heads (",
            num_heads, ") must divide the hidden size (", hidden_size, ")");
  // Not necessarily a multiple: the patch conv drops the remainder (SigLIP so400m: 384 / 14).
  MVL_CHECK(patch_size > 0 && image_size >= patch_size, file, ": image size (", image_size,
            ") must be at least the patch size (", patch_size, ")");
  MVL_CHECK(layer_norm_eps > 0.0, file, ": layer_norm_eps must be > 0");
  const double params = num_parameters();
  MVL_CHECK(params <= kMaxParameters, file, ": the config describes ", params, " parameters (",
            f.hidden, " ", hidden_size, ", ", f.layers, " ", num_layers, ", MLP ",
            intermediate_size, ", ", f.image, " ", image_size, ", ", f.patch, " ", patch_size,
            "), over the limit of ", kMaxParameters);
  if (layout == ViTLayout::EVA02) {
    MVL_CHECK(head_dim() % 4 == 0, file, ": EVA-02 head dimension (", head_dim(),
              ") must be a multiple of 4 for the 2-D rotary embedding");
    MVL_CHECK(ref_feat_shape[0] > 0 && ref_feat_shape[1] > 0, file,
              ": ref_feat_shape must be positive");
  } else {
    static const std::set<std::string> acts = {"quick_gelu", "gelu_pytorch_tanh", "gelu_new",
                                               "gelu"};
    MVL_CHECK(acts.count(hidden_act), file, ": hidden_act '", hidden_act,
              "' is not supported (quick_gelu, gelu_pytorch_tanh, gelu_new, gelu)");
  }
}

double ViTConfig::num_parameters() const {
  const double d = static_cast<double>(hidden_size), I = static_cast<double>(intermediate_size);
  const double p = static_cast<double>(patch_size), g = static_cast<double>(grid());
  const double tokens = static_cast<double>(num_prefix()) + g * g;
  const bool eva = layout == ViTLayout::EVA02;
  double n = static_cast<double>(num_prefix()) * d + tokens * d;  // class token, positions
  n += d * 3 * p * p + (layout == ViTLayout::CLIP ? 0 : d);       // patch conv (+ bias)
  if (layout == ViTLayout::CLIP) n += 2 * d;                      // pre_layrnorm
  n += 2 * d;                                                     // final norm
  double attn = 4 * d * d + 4 * d - (eva ? d : 0);  // q, k, v, out (EVA: k has no bias)
  if (eva && scale_attn_inner) attn += 2 * d;
  const double mlp = eva ? 2 * (d * I + I) + 2 * I + I * d + d  // fc1_g, fc1_x, sub-LN, fc2
                         : d * I + I + I * d + d;              // fc1, fc2
  return n + static_cast<double>(num_layers) * (4 * d + attn + mlp);  // + norm1, norm2
}

ExpectedWeights ViTConfig::expected_weights(const std::string& fields,
                                            const std::string& layers_key) const {
  const ViTFields f = vit_fields(layout, layers_key);
  const std::string h = fields + f.hidden, I = fields + f.mlp, img = fields + f.image,
                    p = fields + f.patch;
  const int64_t d = hidden_size, tokens = num_prefix() + grid() * grid();
  const ExpectedDim positions =
      dim(tokens, img,
          "(" + img + " / " + p + ")²" + (num_prefix() > 0 ? std::string(" + 1") : ""));
  const ExpectedDim mlp = layout == ViTLayout::EVA02
                              ? dim(intermediate_size, I, "int(" + h + " × " + I + ")")
                              : dim(intermediate_size, I);
  const std::vector<ExpectedDim> patch = {dim(d, h), fixed(3), dim(patch_size, p),
                                          dim(patch_size, p)};
  ExpectedWeights w;
  w.num_parameters = num_parameters();
  if (layout == ViTLayout::EVA02) {
    w.tensor({"patch_embed.proj.weight"}, patch);
    w.tensor({"pos_embed"}, {fixed(1), positions, dim(d, h)});
    w.tensor({"blocks.0.attn.q_proj.weight"}, {dim(d, h), dim(d, h)});
    w.tensor({"blocks.0.mlp.fc1_g.weight"}, {mlp, dim(d, h)});
    w.tensor({"blocks.0.mlp.fc1_x.weight"}, {mlp, dim(d, h)});
    w.tensor({"blocks.0.mlp.fc2.weight"}, {dim(d, h), mlp});
    w.layer_count({"blocks."}, num_layers, fields + f.layers);
    return w;
  }
  // CLIP / SigLIP: keys with or without "vision_model." (transformers 5).
  auto keys = [](const std::string& k) {
    return std::vector<std::string>{"vision_model." + k, k};
  };
  w.tensor(keys("embeddings.patch_embedding.weight"), patch);
  w.tensor(keys("embeddings.position_embedding.weight"), {positions, dim(d, h)});
  w.tensor(keys("encoder.layers.0.self_attn.q_proj.weight"), {dim(d, h), dim(d, h)});
  w.tensor(keys("encoder.layers.0.mlp.fc1.weight"), {mlp, dim(d, h)});
  w.tensor(keys("encoder.layers.0.mlp.fc2.weight"), {dim(d, h), mlp});
  w.layer_count(keys("encoder.layers."), num_layers, fields + f.layers);
  return w;
}

ViTConfig ViTConfig::from_json(const nlohmann::json& j, const std::string& file) {
  MVL_CHECK(j.is_object(), file, ": config must be a JSON object");
  ViTConfig c;
  if (j.contains("architecture")) {
    const std::string arch = cfg::get_string(j, "architecture", file, "");
    MVL_CHECK(arch.rfind("eva02", 0) == 0, file, ": architecture '", arch,
              "' is not a vision encoder mambavl reads (timm folders: EVA-02 only)");
    c = parse_timm(j, file, arch);
  } else {
    const std::string mt = cfg::get_string(j, "model_type", file, "");
    MVL_CHECK(
        mt == "clip_vision_model" || mt == "siglip_vision_model" || mt == "clip" || mt == "siglip",
        file, ": not a vision encoder folder: model_type '", mt,
        "' (expected clip_vision_model, siglip_vision_model, clip or siglip; or a timm ",
        "config.json with \"architecture\": \"eva02_...\")");
    c = parse_hf(j, file, mt);
  }
  c.validate(file);
  return c;
}

nlohmann::json ViTConfig::to_json() const {
  nlohmann::json j;
  if (layout == ViTLayout::EVA02) {
    j["architecture"] = timm_arch.empty() ? std::string("eva02_large_patch14_224") : timm_arch;
    j["num_classes"] = 0;
    j["num_features"] = hidden_size;
    j["global_pool"] = global_pool;
    j["model_args"] = {{"img_size", image_size},
                       {"patch_size", patch_size},
                       {"embed_dim", hidden_size},
                       {"depth", num_layers},
                       {"num_heads", num_heads},
                       {"mlp_ratio", mlp_ratio},
                       {"scale_attn_inner", scale_attn_inner},
                       {"ref_feat_shape", {ref_feat_shape[0], ref_feat_shape[1]}},
                       {"rope_temperature", rope_temperature},
                       {"global_pool", global_pool},
                       {"num_classes", 0}};
    j["pretrained_cfg"] = {{"input_size", {3, image_size, image_size}},
                           {"mean", {mean[0], mean[1], mean[2]}},
                           {"std", {std[0], std[1], std[2]}}};
  } else {
    const bool siglip = layout == ViTLayout::SigLIP;
    j["architectures"] = {siglip ? "SiglipVisionModel" : "CLIPVisionModel"};
    j["model_type"] = siglip ? "siglip_vision_model" : "clip_vision_model";
    j["hidden_size"] = hidden_size;
    j["intermediate_size"] = intermediate_size;
    j["num_hidden_layers"] = num_layers;
    j["num_attention_heads"] = num_heads;
    j["num_channels"] = 3;
    j["image_size"] = image_size;
    j["patch_size"] = patch_size;
    j["hidden_act"] = hidden_act;
    j["layer_norm_eps"] = layer_norm_eps;
    if (siglip) j["vision_use_head"] = false;  // the pooling head is not kept (vit.h)
  }
  if (causal) j["causal"] = true;
  return j;
}

}  // namespace mambavl::models
