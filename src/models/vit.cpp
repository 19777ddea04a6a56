// ViT modules (patch embedding, 2-D rotary, attention, MLP, block), the trunk (embeddings,
// position-embedding interpolation, hidden states), the encoder (load / encode / save) and the
// registry entry load_vit_encoder. Config parsing: vit_config.cpp; classifier and presets:
// vit_classifier.cpp.
#include "models/vit.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/nn/modules/container/modulelist.h>

#include <cmath>
#include <functional>

#include "common/error.h"
#include "io/checkpoint.h"
#include "kernels/attention_prefill.h"
#include "models/bf16_gemm.h"
#include "models/vision_factories.h"

namespace mambavl::models {

namespace fs = std::filesystem;

namespace {

bool starts_with(const std::string& s, const std::string& p) { return s.rfind(p, 0) == 0; }

torch::nn::LayerNorm make_ln(int64_t dim, double eps) {
  return torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(eps));
}

// ln(x) in x's dtype: bf16 parameters are converted for fp32 activations (inference_compute_dtype;
// at::layer_norm refuses fp32 input with bf16 parameters).
at::Tensor norm(torch::nn::LayerNorm ln, const at::Tensor& x) {  // (a holder: shared)
  if (!ln->weight.defined() || ln->weight.scalar_type() == x.scalar_type()) return ln->forward(x);
  const auto& o = ln->options;
  return at::layer_norm(x, o.normalized_shape(), ln->weight.to(x.scalar_type()),
                        ln->bias.defined() ? ln->bias.to(x.scalar_type()) : at::Tensor(), o.eps());
}

at::Tensor apply_drop_path(const at::Tensor& y, double p, bool training) {
  if (!training || p <= 0.0) return y;
  const double keep = 1.0 - p;
  std::vector<int64_t> shape(y.dim(), 1);
  shape[0] = y.size(0);
  at::Tensor mask = at::empty(shape, y.options()).bernoulli_(keep).div_(keep);  // [B, 1, 1]
  return y * mask;
}

// timm's trunc_normal_(t, std, a=-2, b=2) (inverse-CDF method).
void trunc_normal(at::Tensor t, double std, at::Generator& gen) {
  auto cdf = [](double x) { return (1.0 + std::erf(x / std::sqrt(2.0))) / 2.0; };
  const double l = cdf(-2.0 / std), u = cdf(2.0 / std);
  t.uniform_(2 * l - 1, 2 * u - 1, gen);
  t.erfinv_();
  t.mul_(std * std::sqrt(2.0));
  t.clamp_(-2.0, 2.0);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Modules

PatchEmbedImpl::PatchEmbedImpl(int64_t channels, int64_t dim, int64_t patch_, bool with_bias)
    : patch(patch_) {
  weight = register_parameter("weight", at::empty({dim, channels, patch, patch}));
  if (with_bias) bias = register_parameter("bias", at::empty({dim}));
}

at::Tensor PatchEmbedImpl::forward(const at::Tensor& images) const {
  // fp32 images on bf16 weights (inference_compute_dtype): the small kernel converted.
  const auto dt = images.scalar_type();
  at::Tensor w = weight.scalar_type() == dt ? weight : weight.to(dt);
  at::Tensor b = !bias.defined() || bias.scalar_type() == dt ? bias : bias.to(dt);
  at::Tensor y = at::conv2d(images, w, b, {patch, patch});  // [B, C, gh, gw]
  return y.flatten(2).transpose(1, 2);                      // [B, gh*gw, C]
}

std::pair<at::Tensor, at::Tensor> Rope2D::cos_sin(int64_t head_dim, int64_t gh, int64_t gw,
                                                  std::array<int64_t, 2> ref, double temperature,
                                                  at::Device device) {
  const int64_t nb = head_dim / 4;
  // bands = 1 / temperature^(j / nb), j = 0 .. nb-1 (timm freq_bands(step=1)), fp32.
  at::Tensor expo = at::arange(nb, at::kLong).to(at::kFloat) / static_cast<double>(nb);  // [nb]
  at::Tensor bands = at::reciprocal(at::pow(temperature, expo));                         // [nb]
  // Index grid rescaled to the reference shape: t = i / g * ref (EVA's scheme).
  at::Tensor th = at::arange(gh, at::kLong).to(at::kFloat) / static_cast<double>(gh) *
                  static_cast<double>(ref[0]);  // [gh]
  at::Tensor tw = at::arange(gw, at::kLong).to(at::kFloat) / static_cast<double>(gw) *
                  static_cast<double>(ref[1]);                         // [gw]
  at::Tensor py = (th.view({gh, 1, 1}) * bands).expand({gh, gw, nb});  // [gh, gw, nb]
  at::Tensor px = (tw.view({1, gw, 1}) * bands).expand({gh, gw, nb});  // [gh, gw, nb]
  at::Tensor pos = at::cat({py, px}, -1).reshape({gh * gw, 2 * nb});   // [N, hd/2]
  at::Tensor c = pos.cos().repeat_interleave(2, -1);                   // [N, hd] (f0 f0 f1 f1 ..)
  at::Tensor s = pos.sin().repeat_interleave(2, -1);                   // [N, hd]
  return {c.to(device), s.to(device)};
}

at::Tensor Rope2D::apply(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  at::Tensor xf = x.to(at::kFloat);                           // [B, H, N, hd]
  at::Tensor pairs = xf.unflatten(-1, {xf.size(-1) / 2, 2});  // [B, H, N, hd/2, 2]
  at::Tensor rot = at::stack({-pairs.select(-1, 1), pairs.select(-1, 0)}, -1)
                       .flatten(-2);                  // [B, H, N, hd]: (-x1, x0, -x3, x2, ..)
  return (xf * cos + rot * sin).to(x.scalar_type());  // [B, H, N, hd]
}

ViTAttentionImpl::ViTAttentionImpl(const ViTConfig& c)
    : num_heads(c.num_heads), head_dim(c.head_dim()) {
  const int64_t d = c.hidden_size;
  const bool eva = c.layout == ViTLayout::EVA02;
  q_proj = register_module("q_proj", Linear(d, d, true));
  k_proj = register_module("k_proj", Linear(d, d, !eva));  // EVA: no k bias
  v_proj = register_module("v_proj", Linear(d, d, true));
  if (eva && c.scale_attn_inner) norm = register_module("norm", make_ln(d, c.layer_norm_eps));
  out_proj = register_module(eva ? "proj" : "out_proj", Linear(d, d, true));
}

at::Tensor ViTAttentionImpl::forward(const at::Tensor& x, const at::Tensor& cos,
                                     const at::Tensor& sin, int64_t num_prefix, bool causal) {
  const int64_t B = x.size(0), T = x.size(1);
  auto heads = [&](const Linear& proj) {
    return proj->forward(x).view({B, T, num_heads, head_dim}).transpose(1, 2);  // [B, H, T, hd]
  };
  at::Tensor q = heads(q_proj), k = heads(k_proj), v = heads(v_proj);
  if (cos.defined()) {
    // Rotary on the patch tokens only; prefix (class) tokens pass unrotated (timm EvaAttention).
    const int64_t n = T - num_prefix;
    q = at::cat({q.narrow(2, 0, num_prefix), Rope2D::apply(q.narrow(2, num_prefix, n), cos, sin)},
                2);  // [B, H, T, hd]
    k = at::cat({k.narrow(2, 0, num_prefix), Rope2D::apply(k.narrow(2, num_prefix, n), cos, sin)},
                2);  // [B, H, T, hd]
  }
  at::Tensor ctx;  // [B, T, C]
  at::Tensor qt = q.transpose(1, 2), kt = k.transpose(1, 2),
             vt = v.transpose(1, 2);                 // [B, T, H, hd]
  if (kernels::use_attention_prefill(qt, kt, vt)) {  // the fused CPU kernel writes [B, T, H, hd]
    const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim));
    ctx = kernels::attention_prefill(qt, kt, vt, causal, 0, scale).view({B, T, -1});
  } else {
    ctx = at::scaled_dot_product_attention(q, k, v, {}, 0.0, causal);  // [B, H, T, hd]
    ctx = ctx.transpose(1, 2).reshape({B, T, num_heads * head_dim});   // [B, T, C]
  }
  if (!norm.is_empty()) ctx = models::norm(norm, ctx);
  return out_proj->forward(ctx);  // [B, T, C]
}

ViTMLPImpl::ViTMLPImpl(const ViTConfig& c)
    : swiglu(c.layout == ViTLayout::EVA02), act(c.hidden_act) {
  const int64_t d = c.hidden_size, h = c.intermediate_size;
  if (swiglu) {
    fc1_g = register_module("fc1_g", Linear(d, h, true));
    fc1_x = register_module("fc1_x", Linear(d, h, true));
    norm = register_module("norm", make_ln(h, c.layer_norm_eps));
  } else {
    fc1 = register_module("fc1", Linear(d, h, true));
  }
  fc2 = register_module("fc2", Linear(h, d, true));
}

at::Tensor ViTMLPImpl::forward(const at::Tensor& x) {
  if (swiglu) {
    at::Tensor y = at::silu(fc1_g->forward(x)) * fc1_x->forward(x);  // [B, T, h]
    return fc2->forward(models::norm(norm, y));                      // [B, T, C]
  }
  at::Tensor y = fc1->forward(x);  // [B, T, h]
  if (act == "quick_gelu" && !at::GradMode::is_enabled())
    y = y.mul(1.702).sigmoid_().mul_(y);  // the same values, one pass and buffer fewer
  else if (act == "quick_gelu")
    y = y * at::sigmoid(1.702 * y);
  else if (act == "gelu")
    y = at::gelu(y);
  else  // gelu_pytorch_tanh, gelu_new
    y = at::gelu(y, "tanh");
  return fc2->forward(y);  // [B, T, C]
}

ViTBlockImpl::ViTBlockImpl(const ViTConfig& c) {
  const bool eva = c.layout == ViTLayout::EVA02;
  norm1 = register_module(eva ? "norm1" : "layer_norm1", make_ln(c.hidden_size, c.layer_norm_eps));
  attn = register_module(eva ? "attn" : "self_attn", std::make_shared<ViTAttentionImpl>(c));
  norm2 = register_module(eva ? "norm2" : "layer_norm2", make_ln(c.hidden_size, c.layer_norm_eps));
  mlp = register_module("mlp", std::make_shared<ViTMLPImpl>(c));
}

at::Tensor ViTBlockImpl::forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                                 int64_t num_prefix, bool causal) {
  at::Tensor a = attn->forward(norm(norm1, x), cos, sin, num_prefix, causal);  // [B, T, C]
  at::Tensor h = x + apply_drop_path(a, drop_path_rate, is_training());        // [B, T, C]
  at::Tensor m = mlp->forward(norm(norm2, h));                                 // [B, T, C]
  return h + apply_drop_path(m, drop_path_rate, is_training());
}

// ---------------------------------------------------------------------------------------------
// Trunk

ViTModel::ViTModel(ViTConfig cfg) : cfg_(std::move(cfg)) {
  cfg_.validate("ViT config");
  const ViTConfig& c = cfg_;
  const int64_t d = c.hidden_size, g = c.grid(), P = c.num_prefix();
  const bool eva = c.layout == ViTLayout::EVA02;
  torch::nn::ModuleList list;
  for (int64_t i = 0; i < c.num_layers; ++i) {
    auto b = std::make_shared<ViTBlockImpl>(c);
    blocks.push_back(b);
    list->push_back(b);
  }
  if (eva) {
    root_ = std::make_shared<torch::nn::Module>("Eva");
    class_embedding = root_->register_parameter("cls_token", at::empty({1, 1, d}));
    pos_table = root_->register_parameter("pos_embed", at::empty({1, P + g * g, d}));
    auto pe = root_->register_module("patch_embed", std::make_shared<torch::nn::Module>());
    patch_embed = pe->register_module("proj", PatchEmbed(3, d, c.patch_size, true));
    root_->register_module("blocks", list);
    final_norm = root_->register_module(c.global_pool == "avg" ? "fc_norm" : "norm",
                                        make_ln(d, c.layer_norm_eps));
  } else {
    root_ = std::make_shared<torch::nn::Module>(c.layout == ViTLayout::CLIP ? "CLIPVisionModel"
                                                                            : "SiglipVisionModel");
    auto vm = root_->register_module("vision_model", std::make_shared<torch::nn::Module>());
    auto emb = vm->register_module("embeddings", std::make_shared<torch::nn::Module>());
    if (c.has_class_token())
      class_embedding = emb->register_parameter("class_embedding", at::empty({d}));
    patch_embed = emb->register_module(
        "patch_embedding", PatchEmbed(3, d, c.patch_size, c.layout == ViTLayout::SigLIP));
    pos_table = emb->register_module("position_embedding", Embedding(P + g * g, d))->weight;
    if (c.layout == ViTLayout::CLIP)
      pre_norm = vm->register_module("pre_layrnorm", make_ln(d, c.layer_norm_eps));
    auto enc = vm->register_module("encoder", std::make_shared<torch::nn::Module>());
    enc->register_module("layers", list);
    final_norm = vm->register_module("post_layernorm", make_ln(d, c.layer_norm_eps));
  }
}

void ViTModel::set_drop_path(double rate) {
  const int64_t n = static_cast<int64_t>(blocks.size());
  for (int64_t i = 0; i < n; ++i)
    blocks[i]->drop_path_rate =
        n > 1 ? rate * static_cast<double>(i) / static_cast<double>(n - 1) : rate;
}

at::Tensor ViTModel::position_embedding(int64_t gh, int64_t gw) const {
  const int64_t g = cfg_.grid(), P = cfg_.num_prefix(), d = cfg_.hidden_size;
  at::Tensor table = pos_table.view({P + g * g, d});  // [P + g*g, C]
  if (gh == g && gw == g) return table.unsqueeze(0);  // [1, P + g*g, C]
  at::Tensor grid =
      table.narrow(0, P, g * g).view({1, g, g, d}).permute({0, 3, 1, 2});  // [1,C,g,g]
  at::Tensor out;
  if (cfg_.layout == ViTLayout::EVA02) {
    // timm resample_abs_pos_embed: fp32, bicubic, antialias=True, align_corners=False.
    out = at::_upsample_bicubic2d_aa(grid.to(at::kFloat), {gh, gw}, false).to(grid.scalar_type());
  } else {
    // HF interpolate_pos_encoding: bicubic, align_corners=False.
    out = at::upsample_bicubic2d(grid, {gh, gw}, false);
  }
  out = out.permute({0, 2, 3, 1}).reshape({1, gh * gw, d});  // [1, gh*gw, C]
  if (P == 0) return out;
  return at::cat({table.narrow(0, 0, P).unsqueeze(0), out}, 1);  // [1, P + gh*gw, C]
}

at::Tensor ViTModel::hidden_state(const at::Tensor& images, int64_t layer, int64_t* gh_out,
                                  int64_t* gw_out) {
  const ViTConfig& c = cfg_;
  const int64_t p = c.patch_size;
  MVL_CHECK(images.defined() && images.dim() == 4 && images.size(1) == 3, to_string(c.layout),
            " encoder: images must be [B, 3, H, W], got ",
            images.defined() ? c10::str(images.sizes()) : std::string("an undefined tensor"));
  const int64_t B = images.size(0), H = images.size(2), W = images.size(3);
  // As the patch conv (and HF): a remainder smaller than a patch is dropped.
  MVL_CHECK(H >= p && W >= p, to_string(c.layout), " encoder: image size ", H, "x", W,
            " is smaller than the patch size ", p);
  MVL_CHECK(layer >= 0 && layer <= c.num_layers, "hidden state ", layer, " out of range 0..",
            c.num_layers);
  const int64_t gh = H / p, gw = W / p, P = c.num_prefix(), d = c.hidden_size;
  if (gh_out) *gh_out = gh;
  if (gw_out) *gw_out = gw;
  // [B, 3, H, W] in the compute dtype: the weights' own, or fp32 for bf16 weights on CPUs whose
  // bf16 GEMM goes through fp32 (inference_compute_dtype) when no parameter records a gradient
  // (a partly frozen bf16 encoder in training keeps bf16 activations and their autograd).
  at::ScalarType dt = inference_compute_dtype(patch_embed->weight);
  if (dt != patch_embed->weight.scalar_type() && at::GradMode::is_enabled())
    for (const auto& prm : root_->parameters())
      if (prm.requires_grad()) {
        dt = patch_embed->weight.scalar_type();
        break;
      }
  at::Tensor x = images.to(patch_embed->weight.options().dtype(dt));
  at::Tensor h = patch_embed->forward(x);  // [B, gh*gw, C]
  if (P > 0) {
    at::Tensor cls =
        class_embedding.view({1, 1, d}).expand({B, 1, d}).to(h.scalar_type());  // [B, 1, C]
    h = at::cat({cls, h}, 1);                                                   // [B, 1 + gh*gw, C]
  }
  h = h + position_embedding(gh, gw).to(h.scalar_type());  // [B, T, C]
  if (!pre_norm.is_empty()) h = norm(pre_norm, h);
  at::Tensor cos, sin;  // [gh*gw, hd] fp32
  if (c.layout == ViTLayout::EVA02)
    std::tie(cos, sin) =
        Rope2D::cos_sin(c.head_dim(), gh, gw, c.ref_feat_shape, c.rope_temperature, h.device());
  for (int64_t i = 0; i < layer; ++i) h = blocks[i]->forward(h, cos, sin, P, c.causal);
  return h;  // [B, T, C]
}

void ViTModel::init_weights(uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  at::NoGradGuard ng;
  root_->apply([&](torch::nn::Module& m) {
    if (auto* lin = m.as<LinearImpl>()) {
      trunc_normal(lin->weight, 0.02, gen);
      if (lin->bias.defined()) lin->bias.zero_();
    } else if (auto* ln = m.as<torch::nn::LayerNorm>()) {
      ln->weight.fill_(1.0);
      ln->bias.zero_();
    } else if (auto* pe = m.as<PatchEmbedImpl>()) {
      const double bound = 1.0 / std::sqrt(static_cast<double>(pe->weight[0].numel()));
      pe->weight.uniform_(-bound, bound, gen);
      if (pe->bias.defined()) pe->bias.uniform_(-bound, bound, gen);
    }
  });
  trunc_normal(pos_table, 0.02, gen);
  if (class_embedding.defined()) class_embedding.normal_(0.0, 1e-6, gen);
}

void ViTModel::load(const fs::path& dir) {
  io::CheckpointFolder ckpt(dir);
  io::LoadOptions opt;
  if (cfg_.layout == ViTLayout::EVA02) {
    // head.*: classifier / projection (not part of the encoder); the final norm may be absent
    // (MIM checkpoints have no fc_norm) -- FeatureSelect::final_norm is then refused (below); the
    // other one (fc_norm vs norm, which depends on timm's global_pool) is ignored.
    opt.ignore_extra = [](const std::string& k) {
      return starts_with(k, "head.") || starts_with(k, "rope.") || starts_with(k, "fc_norm.") ||
             starts_with(k, "norm.");
    };
    opt.allow_missing = [](const std::string& n) {
      return starts_with(n, "fc_norm.") || starts_with(n, "norm.");
    };
  } else {
    const std::string pre = "vision_model.";
    opt.keys_for = [pre](const std::string& n) {
      std::vector<std::string> keys{n};
      if (starts_with(n, pre)) keys.push_back(n.substr(pre.size()));  // transformers 5 layout
      return keys;
    };
    opt.ignore_extra = [pre](const std::string& key) {
      const std::string k = starts_with(key, pre) ? key.substr(pre.size()) : key;
      if (starts_with(k, "head.") || k.ends_with("position_ids")) return true;  // SigLIP head
      const bool tower = starts_with(key, pre) || starts_with(k, "embeddings.") ||
                         starts_with(k, "encoder.") || starts_with(k, "pre_layrnorm.") ||
                         starts_with(k, "post_layernorm.");
      return !tower;  // text tower, projections, logit scale of full CLIP / SigLIP models
    };
  }
  at::NoGradGuard ng;
  final_norm->weight.fill_(1.0);  // kept when a timm folder has no final norm
  final_norm->bias.zero_();
  io::load_module(*root_, ckpt, opt);
  // CLIP / SigLIP require post_layernorm (load_module errors without it); timm may omit it.
  final_norm_loaded =
      cfg_.layout != ViTLayout::EVA02 ||
      ckpt.contains((cfg_.global_pool == "avg" ? "fc_norm" : "norm") + std::string(".weight"));
}

at::Tensor ViTModel::apply_final_norm(const at::Tensor& h) const { return norm(final_norm, h); }

std::string ViTModel::feature_norm_missing() const {
  if (cfg_.layout != ViTLayout::EVA02) return "";
  if (cfg_.global_pool == "avg")
    return "this EVA-02 has global_pool \"avg\": timm's final norm is an Identity there (fc_norm "
           "is applied after pooling, not to the tokens), so there is no final norm";
  if (!final_norm_loaded) return "its checkpoint has no final norm (norm.weight / norm.bias)";
  return "";
}

// ---------------------------------------------------------------------------------------------
// Encoder

std::unique_ptr<ViTEncoder> ViTEncoder::load(const fs::path& dir) {
  const fs::path file = dir / "config.json";
  MVL_CHECK(fs::exists(file), dir.string(), ": no config.json (expected a vision encoder folder)");
  ViTConfig cfg = ViTConfig::from_json(io::read_json_file(file), file.string());
  auto enc = std::make_unique<ViTEncoder>(cfg);
  enc->model().load(dir);
  return enc;
}

io::ImagePreprocess ViTEncoder::preprocess() const {
  const ViTConfig& c = model_.config();
  if (c.layout == ViTLayout::CLIP) return io::ImagePreprocess::clip(c.image_size);
  if (c.layout == ViTLayout::SigLIP) return io::ImagePreprocess::siglip(c.image_size);
  io::ImagePreprocess pp;  // EVA-02: bilinear squash (Shaking-Up), checkpoint mean / std
  pp.size = c.image_size;
  pp.resample = io::Resample::Bilinear;
  pp.mode = "squash";
  pp.mean = c.mean;
  pp.std = c.std;
  return pp;
}

VisionFeatures ViTEncoder::encode(const at::Tensor& images, const FeatureSelect& sel) {
  const ViTConfig& c = model_.config();
  const int64_t L = c.num_layers;
  const int64_t layer = sel.layer < 0 ? L + 1 + sel.layer : sel.layer;
  MVL_CHECK(layer >= 0 && layer <= L, "vision feature layer ", sel.layer, " is out of range for a ",
            L, "-layer encoder (hidden states 0..", L, ", or -1..-", L + 1, " from the end)");
  if (sel.final_norm) {
    MVL_CHECK(layer == L, "vision feature final_norm applies the encoder's final norm to the last ",
              "layer only (-1 or ", L, "), not to layer ", sel.layer);
    const std::string why = model_.feature_norm_missing();
    MVL_CHECK(why.empty(), to_string(c.layout), " encoder: vision feature final_norm: ", why);
  }
  VisionFeatures f;
  at::Tensor h = model_.hidden_state(images, layer, &f.grid_h, &f.grid_w);  // [B, T, C]
  if (sel.final_norm) h = model_.apply_final_norm(h);                       // [B, T, C]
  h = h.to(model_.patch_embed->weight.scalar_type());  // in the weights' dtype (fp32 compute)
  const int64_t P = c.num_prefix();
  if (sel.keep_prefix) {
    f.tokens = h;
    f.num_prefix = P;
  } else {
    f.tokens = h.narrow(1, P, h.size(1) - P);  // [B, gh*gw, C]
    f.num_prefix = 0;
  }
  return f;
}

void ViTEncoder::save(const fs::path& dir) const {
  // A final norm the checkpoint did not have is not invented (it is ones / zeros here).
  const ViTModel& m = model_;
  std::function<std::string(const std::string&)> rename;
  if (!m.final_norm_loaded) {
    const std::string prefix = m.config().global_pool == "avg" ? "fc_norm." : "norm.";
    rename = [prefix](const std::string& n) { return starts_with(n, prefix) ? std::string() : n; };
  }
  io::save_module(model_.module(), dir, rename);
  io::write_json_file(dir / "config.json", model_.config().to_json());
}

void ViTEncoder::set_causal(bool causal) { model_.set_causal(causal); }

void ViTEncoder::to_dtype(at::ScalarType dtype) {
  MVL_CHECK(dtype == at::kFloat || dtype == at::kBFloat16,
            "ViT encoders run in float32 or bfloat16, not ", c10::toString(dtype));
  at::NoGradGuard ng;
  for (auto& p : model_.module().parameters())
    if (p.scalar_type() != dtype) p.set_data(p.to(dtype));
}

std::unique_ptr<VisionEncoder> load_vit_encoder(const fs::path& dir, const nlohmann::json& cfg) {
  const std::string file = (dir / "config.json").string();
  ViTConfig c = ViTConfig::from_json(cfg, file);
  check_weights_match_config(c.expected_weights(), io::CheckpointFolder(dir), file);
  auto enc = std::make_unique<ViTEncoder>(c);
  enc->model().load(dir);
  return enc;
}

std::unique_ptr<VisionEncoder> make_vit_encoder(const nlohmann::json& cfg, uint64_t seed,
                                                bool initialize, const std::string& file) {
  auto enc = std::make_unique<ViTEncoder>(ViTConfig::from_json(cfg, file));
  if (initialize) enc->model().init_weights(seed);
  return enc;
}

}  // namespace mambavl::models
