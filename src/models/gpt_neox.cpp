// GPT-NeoX / Pythia: config, attention (fused per-head QKV + shared rotary / KV cache / SDPA),
// MLP, parallel or sequential residual layer, LM, load / save / init.
#include "models/gpt_neox.h"

#include <ATen/ATen.h>
#include <torch/nn/modules/container/modulelist.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>
#include <tuple>

#include "common/error.h"
#include "kernels/attention_step.h"
#include "kernels/backend.h"
#include "kernels/gemv.h"
#include "kernels/thread_team.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "io/config_util.h"
#include "models/lm_limits.h"

namespace mambavl::models {

// ---------------------------------------------------------------------------------------------
// Config

namespace {

// Keys of transformers' GPTNeoXConfig (4.x and 5.x) and PretrainedConfig bookkeeping that carry
// no information for inference (dropout, initialisation, generation defaults).
const std::set<std::string> kNeoXKnown = {"_name_or_path",
                                          "_commit_hash",
                                          "add_cross_attention",
                                          "architectures",
                                          "attention_bias",
                                          "attention_dropout",
                                          "attention_probs_dropout_prob",
                                          "bos_token_id",
                                          "chunk_size_feed_forward",
                                          "classifier_dropout",
                                          "decoder_start_token_id",
                                          "dtype",
                                          "eos_token_id",
                                          "finetuning_task",
                                          "hidden_act",
                                          "hidden_dropout",
                                          "hidden_dropout_prob",
                                          "hidden_size",
                                          "id2label",
                                          "initializer_range",
                                          "intermediate_size",
                                          "is_decoder",
                                          "is_encoder_decoder",
                                          "label2id",
                                          "layer_norm_eps",
                                          "max_position_embeddings",
                                          "model_type",
                                          "num_attention_heads",
                                          "num_hidden_layers",
                                          "output_attentions",
                                          "output_hidden_states",
                                          "pad_token_id",
                                          "partial_rotary_factor",
                                          "prefix",
                                          "problem_type",
                                          "pruned_heads",
                                          "return_dict",
                                          "rope_parameters",
                                          "rope_scaling",
                                          "rope_theta",
                                          "rotary_emb_base",
                                          "rotary_pct",
                                          "sep_token_id",
                                          "task_specific_params",
                                          "tie_encoder_decoder",
                                          "tie_word_embeddings",
                                          "tokenizer_class",
                                          "torch_dtype",
                                          "torchscript",
                                          "transformers_version",
                                          "use_cache",
                                          "use_parallel_residual",
                                          "vocab_size",
                                          "quantization_config"};

const std::set<std::string> kRopeKnown = {"rope_theta", "partial_rotary_factor", "rope_type",
                                          "type"};

// rope_parameters (transformers 5) or rope_scaling (4.x; only null / default is supported).
void parse_rope_object(GPTNeoXConfig& c, const nlohmann::json& r, const std::string& file,
                       const std::string& key) {
  cfg::check_known_keys(r, kRopeKnown, file, "'" + key + "'");
  std::string type = cfg::get_string(r, "rope_type", file, "");
  if (type.empty()) type = cfg::get_string(r, "type", file, "default");
  MVL_CHECK(type == "default", file, ": ", key, ".rope_type = '", type,
            "' is not supported (only \"default\" rotary embeddings)");
  c.rotary_emb_base = cfg::get_double(r, "rope_theta", file, c.rotary_emb_base);
  c.rotary_pct = cfg::get_double(r, "partial_rotary_factor", file, c.rotary_pct);
}

}  // namespace

GPTNeoXConfig GPTNeoXConfig::from_json(const nlohmann::json& j, const std::string& file) {
  MVL_CHECK(j.is_object(), file, ": config must be a JSON object");
  cfg::check_known_keys(j, kNeoXKnown, file);
  GPTNeoXConfig c;
  const std::string mt = cfg::get_string(j, "model_type", file, "gpt_neox");
  MVL_CHECK(mt == "gpt_neox", file, ": key 'model_type' is '", mt, "', not \"gpt_neox\"");
  c.vocab_size = cfg::require_int(j, "vocab_size", file);
  c.hidden_size = cfg::require_int(j, "hidden_size", file);
  cfg::check_limit(c.hidden_size, 1, LMLimits::kMaxHidden, file, "hidden_size");  // before 4 * h
  c.num_hidden_layers = cfg::require_int(j, "num_hidden_layers", file);
  c.num_attention_heads = cfg::require_int(j, "num_attention_heads", file);
  c.intermediate_size = cfg::get_int(j, "intermediate_size", file, 4 * c.hidden_size);
  c.max_position_embeddings = cfg::get_int(j, "max_position_embeddings", file, 2048);
  c.layer_norm_eps = cfg::get_double(j, "layer_norm_eps", file, 1e-5);
  c.use_parallel_residual = cfg::get_bool(j, "use_parallel_residual", file, true);
  c.attention_bias = cfg::get_bool(j, "attention_bias", file, true);
  // Rotary: transformers 4 (rotary_pct, rotary_emb_base; some 4.4x also rope_theta,
  // partial_rotary_factor) and transformers 5 (rope_parameters, which wins as it does there).
  c.rotary_pct = cfg::get_double(j, "rotary_pct", file, 0.25);
  c.rotary_emb_base = cfg::get_double(j, "rotary_emb_base", file, 10000.0);
  c.rotary_pct = cfg::get_double(j, "partial_rotary_factor", file, c.rotary_pct);
  c.rotary_emb_base = cfg::get_double(j, "rope_theta", file, c.rotary_emb_base);
  if (j.contains("rope_scaling") && !j.at("rope_scaling").is_null())
    parse_rope_object(c, j.at("rope_scaling"), file, "rope_scaling");
  if (j.contains("rope_parameters") && !j.at("rope_parameters").is_null())
    parse_rope_object(c, j.at("rope_parameters"), file, "rope_parameters");
  const std::string act = cfg::get_string(j, "hidden_act", file, "gelu");
  MVL_CHECK(act == "gelu", file, ": key 'hidden_act' is '", act,
            "'; only \"gelu\" (exact erf GELU, as Pythia uses) is supported");
  MVL_CHECK(!cfg::get_bool(j, "tie_word_embeddings", file, false), file,
            ": key 'tie_word_embeddings' = true is not supported (GPT-NeoX has an untied "
            "embed_out)");
  for (const char* k : {"bos_token_id", "eos_token_id", "pad_token_id"}) {
    nlohmann::json v = j.contains(k) ? j.at(k) : nlohmann::json(nullptr);
    MVL_CHECK(v.is_null() || v.is_number_integer() || v.is_array(), file, ": key '", k,
              "' must be an integer, a list of integers or null, got ", v.dump());
    if (std::string(k) == "bos_token_id") c.bos_token_id = v;
    if (std::string(k) == "eos_token_id") c.eos_token_id = v;
    if (std::string(k) == "pad_token_id") c.pad_token_id = v;
  }
  c.quantization = read_quantization(j, file);
  try {
    c.finalize();
  } catch (const Error& e) {
    MVL_FAIL(file, ": ", e.what());
  }
  return c;
}

void GPTNeoXConfig::finalize() {
  MVL_CHECK(vocab_size > 0, "key 'vocab_size' must be > 0, got ", vocab_size);
  MVL_CHECK(hidden_size > 0, "key 'hidden_size' must be > 0, got ", hidden_size);
  MVL_CHECK(num_hidden_layers > 0, "key 'num_hidden_layers' must be > 0, got ", num_hidden_layers);
  MVL_CHECK(intermediate_size > 0, "key 'intermediate_size' must be > 0, got ", intermediate_size);
  // The bounds (lm_limits.h), before anything is derived from the sizes.
  using L = LMLimits;
  using T = std::tuple<int64_t, int64_t, const char*>;
  for (const auto& [v, hi, key] :
       {T{vocab_size, L::kMaxVocab, "vocab_size"}, T{hidden_size, L::kMaxHidden, "hidden_size"},
        T{num_hidden_layers, L::kMaxLayers, "num_hidden_layers"},
        T{intermediate_size, L::kMaxIntermediate, "intermediate_size"},
        T{num_attention_heads, L::kMaxHeads, "num_attention_heads"},
        T{max_position_embeddings, L::kMaxPositions, "max_position_embeddings"}})
    MVL_CHECK(v <= hi, key, " ", v, " is over the limit of ", hi);
  const double n = num_parameters();
  MVL_CHECK(n <= L::kMaxParameters, "the config describes ", n, " parameters (hidden_size ",
            hidden_size, ", num_hidden_layers ", num_hidden_layers, ", vocab_size ", vocab_size,
            ", intermediate_size ", intermediate_size, "), over the limit of ",
            L::kMaxParameters);
  MVL_CHECK(num_attention_heads > 0 && hidden_size % num_attention_heads == 0,
            "key 'num_attention_heads' = ", num_attention_heads,
            " must divide hidden_size = ", hidden_size);
  MVL_CHECK(rotary_pct >= 0.0 && rotary_pct <= 1.0,
            "key 'rotary_pct' (partial_rotary_factor) = ", rotary_pct, " must be in [0, 1]");
  MVL_CHECK(rotary_dim() % 2 == 0, "key 'rotary_pct' = ", rotary_pct, " gives an odd rotary ",
            "dimension int(head_dim * rotary_pct) = ", rotary_dim(), " (must be even)");
  MVL_CHECK(rotary_emb_base > 0.0, "key 'rotary_emb_base' (rope_theta) must be > 0, got ",
            rotary_emb_base);
  MVL_CHECK(layer_norm_eps > 0.0, "key 'layer_norm_eps' must be > 0, got ", layer_norm_eps);
  MVL_CHECK(max_position_embeddings > 0, "key 'max_position_embeddings' must be > 0");
}

double GPTNeoXConfig::num_parameters() const {
  const double h = static_cast<double>(hidden_size), V = static_cast<double>(vocab_size);
  const double I = static_cast<double>(intermediate_size);
  const double attn = 3 * h * h + h * h + (attention_bias ? 4 * h : 0);  // query_key_value, dense
  const double mlp = h * I + I + I * h + h;                               // dense_h_to_4h, _4h_to_h
  const double layer = 4 * h + attn + mlp;                                // + two LayerNorms
  // embed_in, embed_out, final LayerNorm, layers
  return 2 * V * h + 2 * h + static_cast<double>(num_hidden_layers) * layer;
}

ExpectedWeights GPTNeoXConfig::expected_weights(const std::string& fields) const {
  const std::string V = fields + "vocab_size", h = fields + "hidden_size",
                    I = fields + "intermediate_size";
  ExpectedWeights w;
  w.num_parameters = num_parameters();
  w.tensor({"gpt_neox.embed_in.weight"}, {dim(vocab_size, V), dim(hidden_size, h)});
  w.tensor({"embed_out.weight"}, {dim(vocab_size, V), dim(hidden_size, h)});
  w.layer_count({"gpt_neox.layers."}, num_hidden_layers, fields + "num_hidden_layers");
  const std::string p = "gpt_neox.layers.0.";
  w.tensor({p + "attention.query_key_value.weight"},
           {dim(3 * hidden_size, h, "3 × " + h), dim(hidden_size, h)});
  w.tensor({p + "attention.dense.weight"}, {dim(hidden_size, h), dim(hidden_size, h)});
  w.tensor({p + "mlp.dense_h_to_4h.weight"}, {dim(intermediate_size, I), dim(hidden_size, h)});
  w.tensor({p + "mlp.dense_4h_to_h.weight"}, {dim(hidden_size, h), dim(intermediate_size, I)});
  return w;
}

nlohmann::json GPTNeoXConfig::to_json() const {
  // transformers 5 writes rope_parameters; 4.x reads rotary_pct / rotary_emb_base (5 accepts them
  // too and lets rope_parameters win), so both are written and agree.
  nlohmann::json j;
  j["architectures"] = {"GPTNeoXForCausalLM"};
  j["model_type"] = "gpt_neox";
  j["vocab_size"] = vocab_size;
  j["hidden_size"] = hidden_size;
  j["num_hidden_layers"] = num_hidden_layers;
  j["num_attention_heads"] = num_attention_heads;
  j["intermediate_size"] = intermediate_size;
  j["hidden_act"] = "gelu";
  j["max_position_embeddings"] = max_position_embeddings;
  j["layer_norm_eps"] = layer_norm_eps;
  j["use_parallel_residual"] = use_parallel_residual;
  j["attention_bias"] = attention_bias;
  j["tie_word_embeddings"] = false;
  j["rotary_pct"] = rotary_pct;
  j["rotary_emb_base"] = rotary_emb_base;
  j["rope_parameters"] = {{"rope_type", "default"},
                          {"rope_theta", rotary_emb_base},
                          {"partial_rotary_factor", rotary_pct}};
  j["bos_token_id"] = bos_token_id;
  j["eos_token_id"] = eos_token_id;
  j["pad_token_id"] = pad_token_id;
  j["use_cache"] = true;
  if (quantization == "int8")
    j["quantization_config"] = int8_quantization_config(
        "every layer's attention.query_key_value, attention.dense, mlp.dense_h_to_4h, "
        "mlp.dense_4h_to_h; embed_out");
  return j;
}

// ---------------------------------------------------------------------------------------------
// Modules

GPTNeoXAttentionImpl::GPTNeoXAttentionImpl(const GPTNeoXConfig& c)
    : core(c.num_attention_heads, c.num_attention_heads, c.head_dim(), c.rotary_dim(),
           c.rotary_emb_base, /*causal=*/true) {
  const int64_t h = c.hidden_size;
  query_key_value = register_module("query_key_value", Linear(h, 3 * h, c.attention_bias));
  dense = register_module("dense", Linear(h, h, c.attention_bias));
}

at::Tensor GPTNeoXAttentionImpl::mix(const at::Tensor& x, LayerCache* cache, int64_t pos) {
  const int64_t B = x.size(0), L = x.size(1), H = core.num_heads, hd = core.head_dim;
  at::Tensor qkv = query_key_value->forward(x).view({B, L, H, 3 * hd});  // [B, L, H, 3*hd]
  at::Tensor q = qkv.narrow(-1, 0, hd);                                  // [B, L, H, hd]
  at::Tensor k = qkv.narrow(-1, hd, hd);                                 // [B, L, H, hd]
  at::Tensor v = qkv.narrow(-1, 2 * hd, hd);                             // [B, L, H, hd]
  at::Tensor ctx = core.forward(q, k, v, cache ? &as_kv_cache(cache) : nullptr, pos);  // [B, L, h]
  return dense->forward(ctx);                                                          // [B, L, h]
}

std::unique_ptr<LayerCache> GPTNeoXAttentionImpl::make_cache(int64_t batch, int64_t max_len,
                                                             at::ScalarType dtype,
                                                             at::Device device) const {
  return core.make_cache(batch, max_len, dtype, device);
}

GPTNeoXMLPImpl::GPTNeoXMLPImpl(const GPTNeoXConfig& c) {
  dense_h_to_4h =
      register_module("dense_h_to_4h", Linear(c.hidden_size, c.intermediate_size, true));
  dense_4h_to_h =
      register_module("dense_4h_to_h", Linear(c.intermediate_size, c.hidden_size, true));
}

at::Tensor GPTNeoXMLPImpl::forward(const at::Tensor& x) {
  return dense_4h_to_h->forward(at::gelu(dense_h_to_4h->forward(x)));  // [B, L, h]
}

GPTNeoXLayerImpl::GPTNeoXLayerImpl(const GPTNeoXConfig& c) : parallel(c.use_parallel_residual) {
  auto ln = [&] {
    return torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.hidden_size}).eps(c.layer_norm_eps));
  };
  input_layernorm = register_module("input_layernorm", ln());
  post_attention_layernorm = register_module("post_attention_layernorm", ln());
  attention = register_module("attention", std::make_shared<GPTNeoXAttentionImpl>(c));
  mlp = register_module("mlp", std::make_shared<GPTNeoXMLPImpl>(c));
}

at::Tensor GPTNeoXLayerImpl::forward(const at::Tensor& x, LayerCache* cache, int64_t pos) {
  at::Tensor attn = attention->mix(input_layernorm->forward(x), cache, pos);  // [B, L, h]
  if (parallel) return mlp->forward(post_attention_layernorm->forward(x)) + attn + x;
  at::Tensor a = attn + x;  // [B, L, h]
  return mlp->forward(post_attention_layernorm->forward(a)) + a;
}

// ---------------------------------------------------------------------------------------------
// LM

GPTNeoXLM::GPTNeoXLM(GPTNeoXConfig cfg, bool initialize) : cfg_(std::move(cfg)) {
  cfg_.finalize();
  root_ = std::make_shared<torch::nn::Module>("GPTNeoXForCausalLM");
  gpt_neox_ =
      root_->register_module("gpt_neox", std::make_shared<torch::nn::Module>("GPTNeoXModel"));
  embed_in = gpt_neox_->register_module("embed_in", Embedding(cfg_.vocab_size, cfg_.hidden_size));
  torch::nn::ModuleList list;
  for (int64_t i = 0; i < cfg_.num_hidden_layers; ++i) {
    auto l = std::make_shared<GPTNeoXLayerImpl>(cfg_);
    layers.push_back(l);
    list->push_back(l);
  }
  gpt_neox_->register_module("layers", list);
  final_layer_norm = gpt_neox_->register_module(
      "final_layer_norm",
      torch::nn::LayerNorm(
          torch::nn::LayerNormOptions({cfg_.hidden_size}).eps(cfg_.layer_norm_eps)));
  embed_out = root_->register_module("embed_out", Linear(cfg_.hidden_size, cfg_.vocab_size, false));
  if (initialize) init_weights(0);
}

namespace {
// The modules quantize_int8 makes int8: every layer's four projections and embed_out.
template <class F>
void for_each_int8_module(GPTNeoXLM& m, F f) {
  for (auto& l : m.layers)
    for (Linear* lin : {&l->attention->query_key_value, &l->attention->dense,
                        &l->mlp->dense_h_to_4h, &l->mlp->dense_4h_to_h})
      f(**lin);
  f(*m.embed_out);
}
}  // namespace

void GPTNeoXLM::quantize_int8() {
  for_each_int8_module(*this, [](LinearImpl& l) { l.quantize_int8(); });
  for (auto& p : root_->parameters()) p.requires_grad_(false);  // inference only
  cfg_.quantization = "int8";
}

void GPTNeoXLM::init_weights(uint64_t seed) {
  at::manual_seed(seed);
  at::NoGradGuard ng;
  root_->apply([](torch::nn::Module& m) {
    if (auto* lin = m.as<LinearImpl>()) {
      lin->weight.normal_(0.0, 0.02);
      if (lin->bias.defined()) lin->bias.zero_();
    } else if (auto* emb = m.as<EmbeddingImpl>()) {
      emb->weight.normal_(0.0, 0.02);
    } else if (auto* ln = m.as<torch::nn::LayerNorm>()) {
      ln->weight.fill_(1.0);
      ln->bias.zero_();
    }
  });
}

void GPTNeoXLM::to_dtype(at::ScalarType dtype) {
  MVL_CHECK(dtype == at::kFloat || dtype == at::kBFloat16,
            "GPT-NeoX models run in float32 or bfloat16, not ", c10::toString(dtype));
  at::NoGradGuard ng;
  for (auto& p : root_->parameters())  // int8 weights stay int8
    if (p.scalar_type() != dtype && p.scalar_type() != at::kChar) p.set_data(p.to(dtype));
  dtype_ = dtype;
}

at::Tensor GPTNeoXLM::embed(const at::Tensor& ids) {
  check_token_ids(ids, cfg_.vocab_size);
  return embed_in->forward(ids);  // [B, L, h]
}

at::Tensor GPTNeoXLM::forward_hidden(const at::Tensor& embeds, LMCache* cache) {
  MVL_CHECK(embeds.dim() == 3 && embeds.size(2) == cfg_.hidden_size, "embeddings must be [B, L, ",
            cfg_.hidden_size, "]");
  const int64_t L = embeds.size(1);
  LayerStackCache* nc = cache ? &LayerStackCache::check(cache, this, embeds.size(0), L) : nullptr;
  if (nc) prepare_left_pad(*nc, L);
  const int64_t pos = nc ? nc->len : 0;
  at::Tensor h = embeds.to(dtype_);  // [B, L, h] residual stream in the model dtype (as HF)
  for (size_t i = 0; i < layers.size(); ++i)
    h = layers[i]->forward(h, nc ? nc->layers[i].get() : nullptr, pos);
  if (nc) nc->len += L;
  return final_layer_norm->forward(h);  // [B, L, h]
}

at::Tensor GPTNeoXLM::logits(const at::Tensor& hidden) {
  const at::Tensor& w = embed_out->weight;  // [V, h]
  // int8: the batch kernels for a few rows, else the dequantised weight (LinearImpl::forward).
  if (embed_out->is_int8()) return embed_out->forward(hidden.to(dtype_)).to(at::kFloat);  // [..., V]
  return at::linear(hidden.to(w.scalar_type()), w).to(at::kFloat);  // [..., V]
}

// ---------------------------------------------------------------------------------------------
// Fused batch-1 decode step

namespace {

// out = (x - mean) / sqrt(var + eps) * w + b over n features (statistics in double; a bf16 model
// rounds the result once, as LayerNorm on a bf16 tensor does).
void layer_norm(const float* x, const float* w, const float* b, float* out, int64_t n, double eps,
                bool bf16) {
  double mean = 0;
  for (int64_t i = 0; i < n; ++i) mean += x[i];
  mean /= static_cast<double>(n);
  double var = 0;
  for (int64_t i = 0; i < n; ++i) var += (x[i] - mean) * (x[i] - mean);
  var /= static_cast<double>(n);
  const float mu = static_cast<float>(mean), r = static_cast<float>(1.0 / std::sqrt(var + eps));
  for (int64_t i = 0; i < n; ++i) out[i] = (x[i] - mu) * r * w[i] + b[i];
  if (bf16) kernels::round_bf16(out, n);
}

inline float gelu(float x) { return 0.5f * x * (1.f + std::erf(x * 0.70710678118654752f)); }

// One layer's weights as the fused step reads them: matrices in place (fp32 / bf16), the small
// vectors as fp32 copies (null when absent).
struct NeoXLayerRefs {
  kernels::MatrixRef qkv, dense, fc1, fc2;  // [3h, h], [h, h], [I, h], [h, I]
  const float *ln1_w = nullptr, *ln1_b = nullptr, *ln2_w = nullptr, *ln2_b = nullptr;  // [h]
  const float *qkv_b = nullptr, *dense_b = nullptr, *fc1_b = nullptr, *fc2_b = nullptr;
};

// What a fused decode step of GPT-NeoX keeps between tokens (LayerStackCache::decode_state).
struct GPTNeoXDecodeState : LayerCache {
  at::ScalarType dtype = at::kFloat;  // the model dtype it was made for (remade if it changes)
  std::vector<at::Tensor> keep;       // the fp32 copies the pointers point into
  std::vector<NeoXLayerRefs> layers;
  kernels::MatrixRef head;  // embed_out [V, h]
  const float *lnf_w = nullptr, *lnf_b = nullptr;
  std::vector<kernels::AttentionStepParams> attn;  // per layer, refreshed every step
  // Scratch: residual stream, LayerNorm outputs, qkv [H, 3, hd], attention context, dense output,
  // MLP hidden [I] and output, rotary cos / sin at the position, scores [H, stride].
  std::vector<float> res, ln1, ln2, qkv, ctx, attn_out, mlp_in, mlp_out, cos, sin, scores;
  int64_t score_stride = 0;
  // int8 weights: each phase's input quantised per team member; two, as the parallel residual's
  // dense and fc1 share a phase (unused for fp32 / bf16 weights).
  std::vector<kernels::QuantizedVector> xq, xq2;
};

const float* keep_f32(GPTNeoXDecodeState& st, const at::Tensor& t) {
  if (!t.defined()) return nullptr;
  st.keep.push_back(t.detach().to(at::kFloat).contiguous());
  return st.keep.back().data_ptr<float>();
}

// A weight the fused step reads in place: the model dtype, or int8 (with its scales).
bool usable_matrix(const LinearImpl& l, at::ScalarType dt) {
  const at::Tensor& w = l.weight;
  return w.defined() && w.device().is_cpu() && (w.scalar_type() == dt || l.is_int8()) &&
         w.dim() == 2 && w.is_contiguous();
}

}  // namespace

bool GPTNeoXLM::can_decode_fused(const at::Tensor& embeds, LMCache* cache) const {
  if (!cache || at::GradMode::is_enabled() || embeds.dim() != 3 || embeds.size(0) != 1 ||
      embeds.size(1) != 1 || embeds.size(2) != cfg_.hidden_size || !embeds.device().is_cpu())
    return false;
  // The reference backend (--kernels reference) keeps the op-by-op path, for checking.
  if (kernels::default_backend() == kernels::Backend::Reference) return false;
  if (dtype_ != at::kFloat && dtype_ != at::kBFloat16) return false;
  auto* c = dynamic_cast<LayerStackCache*>(cache);
  if (!c || c->owner != this || c->bsz != 1 || !c->left_pad.empty() ||
      c->layers.size() != layers.size())
    return false;
  for (const auto& l : c->layers)
    if (!kv_cache_fusable(l.get(), dtype_)) return false;
  for (const auto& l : layers)
    for (const Linear* lin : {&l->attention->query_key_value, &l->attention->dense,
                              &l->mlp->dense_h_to_4h, &l->mlp->dense_4h_to_h})
      if (!usable_matrix(**lin, dtype_)) return false;
  return usable_matrix(*embed_out, dtype_);
}

at::Tensor GPTNeoXLM::forward_embeds(const at::Tensor& embeds, LMCache* cache, bool last_only) {
  if (can_decode_fused(embeds, cache))
    return decode_fused(embeds, LayerStackCache::check(cache, this, 1, 1));
  return CausalLM::forward_embeds(embeds, cache, last_only);
}

at::Tensor GPTNeoXLM::decode_fused(const at::Tensor& embeds, LayerStackCache& mc) {
  const int64_t h = cfg_.hidden_size, nl = cfg_.num_hidden_layers, I = cfg_.intermediate_size;
  const int64_t H = cfg_.num_attention_heads;
  const bool bf16 = dtype_ == at::kBFloat16, parallel = cfg_.use_parallel_residual;
  const double eps = cfg_.layer_norm_eps;
  const Rotary& rotary = layers[0]->attention->core.rotary;
  const int64_t rot = rotary.dim();
  const int64_t pos = mc.len;

  // Before the parallel region: every layer's KV cache at `pos` with room for one more token (an
  // overflow is refused here, before anything changes).
  std::vector<KVCache*> kvs;
  for (auto& l : mc.layers) kvs.push_back(&kv_cache_for_step(l.get(), pos));
  for (KVCache* kv : kvs) kv->reserve(pos + 1);

  kernels::DecodeTeamLease lease = kernels::decode_team();
  if (!mc.decode_state || static_cast<GPTNeoXDecodeState&>(*mc.decode_state).dtype != dtype_) {
    auto st = std::make_unique<GPTNeoXDecodeState>();
    st->dtype = dtype_;
    for (const auto& l : layers) {
      NeoXLayerRefs r;
      const auto& a = *l->attention;
      const auto& f = *l->mlp;
      r.qkv = matrix_ref(*a.query_key_value);
      r.dense = matrix_ref(*a.dense);
      r.fc1 = matrix_ref(*f.dense_h_to_4h);
      r.fc2 = matrix_ref(*f.dense_4h_to_h);
      r.ln1_w = keep_f32(*st, l->input_layernorm->weight);
      r.ln1_b = keep_f32(*st, l->input_layernorm->bias);
      r.ln2_w = keep_f32(*st, l->post_attention_layernorm->weight);
      r.ln2_b = keep_f32(*st, l->post_attention_layernorm->bias);
      r.qkv_b = keep_f32(*st, a.query_key_value->bias);
      r.dense_b = keep_f32(*st, a.dense->bias);
      r.fc1_b = keep_f32(*st, f.dense_h_to_4h->bias);
      r.fc2_b = keep_f32(*st, f.dense_4h_to_h->bias);
      st->layers.push_back(r);
    }
    st->head = matrix_ref(*embed_out);
    st->lnf_w = keep_f32(*st, final_layer_norm->weight);
    st->lnf_b = keep_f32(*st, final_layer_norm->bias);
    st->attn.resize(static_cast<size_t>(nl));
    for (auto* v : {&st->res, &st->ln1, &st->ln2, &st->ctx, &st->attn_out, &st->mlp_out})
      v->resize(static_cast<size_t>(h));
    st->qkv.resize(static_cast<size_t>(3 * h));
    st->mlp_in.resize(static_cast<size_t>(I));
    st->cos.resize(static_cast<size_t>(std::max<int64_t>(rot, 1)));
    st->sin.resize(static_cast<size_t>(std::max<int64_t>(rot, 1)));
    mc.decode_state = std::move(st);
  }
  auto& st = static_cast<GPTNeoXDecodeState&>(*mc.decode_state);
  st.xq.resize(static_cast<size_t>(lease.team->size()));
  st.xq2.resize(static_cast<size_t>(lease.team->size()));

  // Per step: rotary cos / sin at pos (the op-by-op path's own table, in the model dtype), the
  // caches' storage, the scores scratch (grown with the caches), the input.
  rotary_row(rotary, pos, dtype_, st.cos.data(), st.sin.data());
  int64_t stride = 0;
  for (int64_t i = 0; i < nl; ++i) {
    KVCache& kv = *kvs[static_cast<size_t>(i)];
    kernels::AttentionStepParams& p = st.attn[static_cast<size_t>(i)];
    p = attention_step_params(layers[i]->attention->core, kv, pos, bf16, st.cos.data(), st.sin.data());
    stride = std::max(stride, p.capacity);
  }
  if (st.score_stride < stride) {
    st.scores.resize(static_cast<size_t>(H * stride));
    st.score_stride = stride;
  }
  at::Tensor e = embeds.reshape({h}).to(dtype_).to(at::kFloat).contiguous();
  std::memcpy(st.res.data(), e.data_ptr<float>(), sizeof(float) * h);
  const int64_t V = st.head.rows;
  at::Tensor logits = at::empty({1, 1, V}, at::kFloat);

  float* out = logits.data_ptr<float>();
  float *res = st.res.data(), *ln1 = st.ln1.data(), *ln2 = st.ln2.data(), *qkv = st.qkv.data();
  float *ctx = st.ctx.data(), *attn = st.attn_out.data(), *mlp_in = st.mlp_in.data();
  float *mlp_out = st.mlp_out.data(), *scores = st.scores.data();
  const int64_t sstride = st.score_stride;
  auto rnd = [bf16](float v) { return bf16 ? kernels::round_bf16(v) : v; };
  // Rows [r0, r1) of y = W x + b, rounded to bf16 for a bf16 model (a bf16 Linear's output).
  auto rows = [&](const kernels::MatrixRef& W, const float* x, kernels::QuantizedVector& xq,
                  float* y, const float* b, int64_t r0, int64_t r1) {
    kernels::gemv_rows(W, x, &xq, y, b, r0, r1);
    if (bf16) kernels::round_bf16(y + r0, r1 - r0);
  };
  auto nchunks = [](int64_t n, int64_t per) { return (n + per - 1) / per; };

  lease.team->run([&](kernels::ThreadTeam::Member& m) {
    kernels::QuantizedVector& xq = st.xq[static_cast<size_t>(m.id())];
    kernels::QuantizedVector& xq2 = st.xq2[static_cast<size_t>(m.id())];
    // int8 weights: the phase's input x [n] quantised once per member (after the barrier that
    // made x ready).
    auto quant = [](kernels::QuantizedVector& q, const kernels::MatrixRef& W, const float* x,
                    int64_t n) {
      if (W.kind == kernels::MatrixRef::Int8) q.set(x, n);
    };
    for (int64_t i = 0; i < nl; ++i) {
      const NeoXLayerRefs& L = st.layers[static_cast<size_t>(i)];
      const kernels::AttentionStepParams& ap = st.attn[static_cast<size_t>(i)];
      const int64_t qr = kernels::gemv_chunk_rows(L.qkv), dr = kernels::gemv_chunk_rows(L.dense);
      const int64_t f1r = kernels::gemv_chunk_rows(L.fc1), f2r = kernels::gemv_chunk_rows(L.fc2);
      const int64_t nd = nchunks(h, dr), nf1 = nchunks(I, f1r), nf2 = nchunks(h, f2r);
      // fc1 rows of chunk c (+ GELU on them, rounded after each op for bf16).
      auto fc1_chunk = [&](int64_t c, const float* x, kernels::QuantizedVector& q) {
        const int64_t r0 = c * f1r, r1 = std::min(I, r0 + f1r);
        rows(L.fc1, x, q, mlp_in, L.fc1_b, r0, r1);
        for (int64_t r = r0; r < r1; ++r) mlp_in[r] = rnd(gelu(mlp_in[r]));
      };

      m.single([&] {
        layer_norm(res, L.ln1_w, L.ln1_b, ln1, h, eps, bf16);
        if (parallel) layer_norm(res, L.ln2_w, L.ln2_b, ln2, h, eps, bf16);
      });
      quant(xq, L.qkv, ln1, h);
      m.for_chunks(nchunks(3 * h, qr), [&](int64_t c) {
        rows(L.qkv, ln1, xq, qkv, L.qkv_b, c * qr, std::min(3 * h, (c + 1) * qr));
      });
      m.for_chunks(H, [&](int64_t hh) {
        kernels::attention_step_head(ap, hh, qkv, scores + hh * sstride, ctx);
      });
      if (parallel) {
        // x + attn(LN1(x)) + mlp(LN2(x)): dense and fc1 share one phase (both read ready inputs).
        quant(xq, L.dense, ctx, h);
        quant(xq2, L.fc1, ln2, h);
        m.for_chunks(nd + nf1, [&](int64_t c) {
          if (c < nd)
            rows(L.dense, ctx, xq, attn, L.dense_b, c * dr, std::min(h, (c + 1) * dr));
          else
            fc1_chunk(c - nd, ln2, xq2);
        });
        quant(xq, L.fc2, mlp_in, I);
        m.for_chunks(nf2, [&](int64_t c) {
          const int64_t r0 = c * f2r, r1 = std::min(h, r0 + f2r);
          rows(L.fc2, mlp_in, xq, mlp_out, L.fc2_b, r0, r1);
          for (int64_t r = r0; r < r1; ++r) res[r] = rnd(rnd(mlp_out[r] + attn[r]) + res[r]);
        });
      } else {
        // a = x + attn(LN1(x)); a + mlp(LN2(a)).
        quant(xq, L.dense, ctx, h);
        m.for_chunks(nd, [&](int64_t c) {
          const int64_t r0 = c * dr, r1 = std::min(h, r0 + dr);
          rows(L.dense, ctx, xq, attn, L.dense_b, r0, r1);
          for (int64_t r = r0; r < r1; ++r) res[r] = rnd(attn[r] + res[r]);
        });
        m.single([&] { layer_norm(res, L.ln2_w, L.ln2_b, ln2, h, eps, bf16); });
        quant(xq, L.fc1, ln2, h);
        m.for_chunks(nf1, [&](int64_t c) { fc1_chunk(c, ln2, xq); });
        quant(xq, L.fc2, mlp_in, I);
        m.for_chunks(nf2, [&](int64_t c) {
          const int64_t r0 = c * f2r, r1 = std::min(h, r0 + f2r);
          rows(L.fc2, mlp_in, xq, mlp_out, L.fc2_b, r0, r1);
          for (int64_t r = r0; r < r1; ++r) res[r] = rnd(mlp_out[r] + res[r]);
        });
      }
    }
    m.single([&] { layer_norm(res, st.lnf_w, st.lnf_b, ln1, h, eps, bf16); });
    quant(xq, st.head, ln1, h);
    const int64_t hr = kernels::gemv_chunk_rows(st.head);
    m.for_chunks(nchunks(V, hr), [&](int64_t c) {
      // A bf16 model's logits are a bf16 Linear's output, as in logits().
      rows(st.head, ln1, xq, out, nullptr, c * hr, std::min(V, (c + 1) * hr));
    });
  });
  for (KVCache* kv : kvs) kv->len = pos + 1;
  mc.len += 1;
  return logits;
}

std::unique_ptr<LMCache> GPTNeoXLM::make_cache(int64_t batch, int64_t max_len) {
  auto c = std::make_unique<LayerStackCache>(this, batch, max_len);
  const at::Device dev = embed_in->weight.device();
  for (auto& l : layers) c->layers.push_back(l->attention->make_cache(batch, max_len, dtype_, dev));
  return c;
}

std::unique_ptr<GPTNeoXLM> GPTNeoXLM::load(const std::filesystem::path& dir,
                                           at::ScalarType dtype) {
  MVL_CHECK(dtype == at::ScalarType::Undefined || dtype == at::kFloat || dtype == at::kBFloat16,
            "GPT-NeoX models run in float32 or bfloat16, not ", c10::toString(dtype));
  const auto cfg_path = dir / "config.json";
  MVL_CHECK(std::filesystem::exists(cfg_path), dir.string(),
            ": no config.json (expected a Hugging Face model folder)");
  GPTNeoXConfig cfg = GPTNeoXConfig::from_json(io::read_json_file(cfg_path), cfg_path.string());
  io::CheckpointFolder ckpt(dir);  // the header: names and shapes
  check_weights_match_config(cfg.expected_weights(), ckpt, cfg_path.string());  // before building
  auto model = std::make_unique<GPTNeoXLM>(cfg, /*initialize=*/false);  // every tensor is loaded
  if (cfg.quantization == "int8") {  // int8 weights and their scales are what the file holds
    for_each_int8_module(*model, [](LinearImpl& l) { l.prepare_int8(); });
    for (auto& p : model->root_->parameters()) p.requires_grad_(false);
  }
  io::LoadOptions opt;
  // Non-persistent buffers that older checkpoints contain.
  opt.ignore_extra = [](const std::string& key) {
    return key.ends_with(".attention.bias") || key.ends_with(".attention.masked_bias") ||
           key.ends_with("rotary_emb.inv_freq");
  };
  if (dtype != at::ScalarType::Undefined)
    opt.dtype_for = [dtype](const std::string&, at::ScalarType current) {
      return current == at::kChar ? current : dtype;  // int8 weights stay int8
    };
  io::load_module(*model->root_, ckpt, opt);
  if (dtype != at::ScalarType::Undefined) model->to_dtype(dtype);  // converts nothing: records it
  model->source_dir_ = dir;
  return model;
}

void GPTNeoXLM::save(const std::filesystem::path& dir) const {
  std::filesystem::create_directories(dir);
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& p : root_->named_parameters()) tensors.emplace_back(p.key(), p.value());
  for (const auto& b : root_->named_buffers()) tensors.emplace_back(b.key(), b.value());  // int8 scales
  io::save_safetensors(dir / "model.safetensors", tensors, {{"format", "pt"}});
  io::write_json_file(dir / "config.json", cfg_.to_json());
  copy_tokenizer_files(source_dir_, dir);
}

}  // namespace mambavl::models
