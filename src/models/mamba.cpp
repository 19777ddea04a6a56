// Mamba language model: mixer (sequence + decode step), residual block, LM head, load / save /
// init.
#include "models/mamba.h"

#include <ATen/ATen.h>
#include <torch/nn/init.h>

#include <cmath>
#include <cstring>
#include <fstream>

#include "common/error.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "kernels/attention_step.h"
#include "kernels/bf16.h"
#include "kernels/causal_conv1d.h"
#include "kernels/gemv.h"
#include "kernels/mamba_step.h"
#include "kernels/selective_scan.h"
#include "models/attention.h"
#include "models/bf16_gemm.h"

namespace mambavl::models {

namespace F = torch::nn::functional;

// ---------------------------------------------------------------------------------------------
// Mixer

namespace {
class Conv1dParams : public torch::nn::Module {
 public:
  Conv1dParams(int64_t channels, int64_t width, bool bias) {
    weight = register_parameter("weight", at::empty({channels, 1, width}));
    if (bias) this->bias = register_parameter("bias", at::empty({channels}));
  }
  at::Tensor weight, bias;
};
}  // namespace

MambaMixerImpl::MambaMixerImpl(const MambaConfig& c, bool initialize) : cfg(c) {
  const int64_t Di = c.d_inner, N = c.d_state, R = c.dt_rank;
  in_proj = register_module("in_proj", Linear(c.d_model, 2 * Di, c.bias));
  auto conv = std::make_shared<Conv1dParams>(Di, c.d_conv, c.conv_bias);
  conv1d = register_module("conv1d", std::static_pointer_cast<torch::nn::Module>(conv));
  conv_weight = conv->weight;
  conv_bias = conv->bias;
  x_proj = register_module("x_proj", Linear(Di, R + 2 * N, false));
  dt_proj = register_module("dt_proj", Linear(R, Di, true));
  A_log = register_parameter("A_log", at::empty({Di, N}));
  D = register_parameter("D", at::ones({Di}));
  out_proj = register_module("out_proj", Linear(Di, c.d_model, c.bias));
  if (initialize) init_weights();
}

void MambaMixerImpl::init_weights() {
  at::NoGradGuard ng;
  for (auto* lin : {&in_proj, &x_proj, &out_proj}) {
    (*lin)->reset_parameters();
    if ((*lin)->bias.defined()) (*lin)->bias.zero_();
  }
  const double bound = 1.0 / std::sqrt(static_cast<double>(cfg.d_conv));
  conv_weight.uniform_(-bound, bound);
  if (conv_bias.defined()) conv_bias.uniform_(-bound, bound);
  reset_ssm_parameters();
}

void MambaMixerImpl::reset_ssm_parameters(double dt_min, double dt_max, double dt_floor) {
  at::NoGradGuard ng;
  const int64_t Di = cfg.d_inner, N = cfg.d_state;
  const double std = std::pow(static_cast<double>(cfg.dt_rank), -0.5);
  dt_proj->weight.uniform_(-std, std);
  at::Tensor dt = at::exp(at::rand({Di}, at::kDouble) * (std::log(dt_max) - std::log(dt_min)) +
                          std::log(dt_min))
                      .clamp_min(dt_floor);                 // [Di]
  at::Tensor inv_softplus = dt + at::log(-at::expm1(-dt));  // [Di]
  dt_proj->bias.copy_(inv_softplus);
  A_log.copy_(at::log(at::arange(1, N + 1, at::kFloat)).unsqueeze(0).expand({Di, N}));
  D.fill_(1.0);
}

std::unique_ptr<LayerCache> MambaMixerImpl::make_cache(int64_t batch, int64_t /*max_len*/,
                                                       at::ScalarType dtype,
                                                       at::Device device) const {
  auto c = std::make_unique<MambaLayerCache>();
  c->conv_state =
      at::zeros({batch, cfg.d_inner, cfg.d_conv}, at::TensorOptions(at::kFloat).device(device));
  c->ssm_state =
      at::zeros({batch, cfg.d_inner, cfg.d_state}, at::TensorOptions(at::kFloat).device(device));
  return c;
}

at::Tensor MambaMixerImpl::mix(const at::Tensor& x, LayerCache* cache, int64_t pos) {
  if (!cache) return forward_sequence(x, nullptr);
  auto* mc = dynamic_cast<MambaLayerCache*>(cache);
  MVL_CHECK(mc, "Mamba layer was given a cache of another layer type");
  if (pos == 0) return forward_sequence(x, mc);
  const int64_t L = x.size(1);
  if (L == 1) return can_use_fused_step(x) ? forward_step_fused(x, *mc) : forward_step(x, *mc);
  std::vector<at::Tensor> outs;
  outs.reserve(L);
  for (int64_t t = 0; t < L; ++t) outs.push_back(forward_step(x.narrow(1, t, 1), *mc));
  return at::cat(outs, 1);
}

namespace {
// Channel-first projection: lin's W [O, I] applied to each batch item's [I, L] -> [B, O, L]
// contiguous, in x's dtype. `x` is either [B, I, L] or, with tokens_major, [B, L, I] (used
// transposed, no copy).
at::Tensor cf_linear(const LinearImpl& lin, const at::Tensor& x, bool tokens_major) {
  auto item = [&](int64_t b) { return tokens_major ? x[b].t() : x[b]; };  // [I, L]
  // weight_mm: a bf16 W goes through the fp32 GEMM on CPUs without a fast bf16 one; int8_mm: an
  // int8 W dequantised block by block (bf16_gemm.h).
  auto mm = [&](const at::Tensor& xi) {
    return lin.is_int8() ? int8_mm(lin.weight, lin.weight_scale, xi)
                         : weight_mm(lin.dense_weight(xi.scalar_type()), xi);
  };
  if (x.size(0) == 1) return mm(item(0)).unsqueeze(0);
  std::vector<at::Tensor> outs;
  outs.reserve(x.size(0));
  for (int64_t b = 0; b < x.size(0); ++b) outs.push_back(mm(item(b)));
  return at::stack(outs);
}
}  // namespace

at::Tensor MambaMixerImpl::forward_sequence(const at::Tensor& x, MambaLayerCache* cache) {
  // Channel-first layout throughout ([B, channels, L], L contiguous), as the kernels want it, so
  // no transposing copies are made: projections are W @ x per batch item.
  const int64_t Di = cfg.d_inner, N = cfg.d_state, R = cfg.dt_rank, W = cfg.d_conv;
  at::Tensor xz = cf_linear(*in_proj, x, /*tokens_major=*/true);  // [B, 2*Di, L]
  if (in_proj->bias.defined()) xz = xz + in_proj->bias.view({1, -1, 1});
  at::Tensor xin = xz.narrow(1, 0, Di);  // [B, Di, L]
  at::Tensor z = xz.narrow(1, Di, Di);   // [B, Di, L]
  // Left padding (batched prefill of prompts of different lengths): zero the conv input and the
  // SSM input at pad positions (as transformers' MambaMixer does with its attention mask), so the
  // real positions, the conv state and the SSM state equal those of each prompt alone.
  at::Tensor keep;  // [B, 1, L] 1 at real positions, 0 at pads; undefined without padding
  if (cache && !cache->left_pad.empty()) {
    const int64_t L = x.size(1);
    at::Tensor pad = at::tensor(cache->left_pad, at::kLong).to(x.device()).view({-1, 1, 1});
    keep = (at::arange(L, at::TensorOptions(at::kLong).device(x.device())).view({1, 1, L}) >= pad)
               .to(xin.scalar_type());
    xin = xin * keep;
  }
  if (cache) cache->conv_state.copy_(kernels::conv_state_from_prefix(xin, W));
  std::optional<at::Tensor> cb;
  if (conv_bias.defined()) cb = conv_bias;
  at::Tensor xc = kernels::causal_conv1d(xin, conv_weight.view({Di, W}), cb, /*silu=*/true,
                                         backend);                             // [B, Di, L]
  if (keep.defined()) xc = xc * keep;
  at::Tensor xdbl = cf_linear(*x_proj, xc, false);                   // [B, R + 2N, L]
  at::Tensor delta = cf_linear(*dt_proj, xdbl.narrow(1, 0, R), false);  // [B, Di, L]
  kernels::SelectiveScanArgs a;
  a.u = xc;
  a.delta = delta;
  a.A = -at::exp(A_log.to(at::kFloat));  // [Di, N]
  a.B = xdbl.narrow(1, R, N);            // [B, N, L]
  a.C = xdbl.narrow(1, R + N, N);        // [B, N, L]
  a.D = D;
  a.z = z;
  a.delta_bias = dt_proj->bias;
  a.delta_softplus = true;
  a.return_last_state = cache != nullptr;
  kernels::SelectiveScanResult r = kernels::selective_scan(a, backend);
  if (cache) cache->ssm_state.copy_(r.last_state);
  if (r.y.size(0) == 1) {
    // One row (a prefill): W @ y, reading y [Di, L] as the scan's threads just wrote it; that
    // orientation ran 7-10 % faster than y^T @ W^T for mamba-130m's out_proj (Xeon, 2 threads).
    // The result is [B, L, d_model] as a transposed view, which the residual add reads in place.
    at::Tensor o = cf_linear(*out_proj, r.y, /*tokens_major=*/false);  // [1, d_model, L]
    if (out_proj->bias.defined()) o = o + out_proj->bias.view({1, -1, 1});
    return o.transpose(1, 2);  // [1, L, d_model]
  }
  return out_proj->forward(r.y.transpose(1, 2));  // [B, L, d_model]
}

at::Tensor MambaMixerImpl::forward_step(const at::Tensor& x, MambaLayerCache& cache) {
  const int64_t Di = cfg.d_inner, N = cfg.d_state, R = cfg.dt_rank, W = cfg.d_conv;
  at::Tensor xz = in_proj->forward(x.select(1, 0));  // [B, 2*Di]
  at::Tensor xin = xz.narrow(1, 0, Di);              // [B, Di]
  at::Tensor z = xz.narrow(1, Di, Di);               // [B, Di]
  std::optional<at::Tensor> cb;
  if (conv_bias.defined()) cb = conv_bias;
  at::Tensor xc = kernels::causal_conv1d_update(xin, cache.conv_state, conv_weight.view({Di, W}),
                                                cb, /*silu=*/true, backend);  // [B, Di]
  at::Tensor xdbl = x_proj->forward(xc);                                      // [B, R + 2N]
  at::Tensor dt = dt_proj->apply(xdbl.narrow(-1, 0, R), /*with_bias=*/false);  // [B, Di]
  at::Tensor A = -at::exp(A_log.to(at::kFloat));                              // [Di, N]
  at::Tensor y = kernels::selective_state_update(cache.ssm_state, xc, dt, A, xdbl.narrow(-1, R, N),
                                                 xdbl.narrow(-1, R + N, N), D, z, dt_proj->bias,
                                                 /*dt_softplus=*/true, backend);  // [B, Di]
  return out_proj->forward(y).unsqueeze(1);                                       // [B, 1, d_model]
}

bool MambaMixerImpl::can_use_fused_step(const at::Tensor& x) const {
  if (backend == kernels::Backend::Reference || at::GradMode::is_enabled()) return false;
  if (kernels::default_backend() == kernels::Backend::Reference &&
      backend == kernels::Backend::Auto)
    return false;
  const auto dt = in_proj->weight.scalar_type();
  return x.size(0) == 1 && x.device().is_cpu() &&
         (dt == at::kFloat || dt == at::kBFloat16 || dt == at::kChar);
}

kernels::MambaStepParams MambaMixerImpl::step_params(MambaLayerCache& c) {
  const int64_t Di = cfg.d_inner, N = cfg.d_state, W = cfg.d_conv, dm = cfg.d_model;
  kernels::MambaStepParams p;
  p.d_model = dm;
  p.d_inner = Di;
  p.d_state = N;
  p.dt_rank = cfg.dt_rank;
  p.d_conv = W;
  p.in_proj_w = matrix_ref(*in_proj);
  p.x_proj_w = matrix_ref(*x_proj);
  p.dt_proj_w = matrix_ref(*dt_proj);
  p.out_proj_w = matrix_ref(*out_proj);
  if (!c.fast_ready) {
    // Small parameters in fp32, laid out back to back: conv_w, conv_b, dt_b, A, D, in_b, out_b.
    std::vector<at::Tensor> parts = {conv_weight.reshape({-1}),
                                     conv_bias.defined() ? conv_bias : at::zeros({Di}),
                                     dt_proj->bias,
                                     -at::exp(A_log.to(at::kFloat)).reshape({-1}),
                                     D,
                                     in_proj->bias.defined() ? in_proj->bias : at::zeros({2 * Di}),
                                     out_proj->bias.defined() ? out_proj->bias : at::zeros({dm})};
    std::vector<at::Tensor> f32;
    for (auto& t : parts) f32.push_back(t.to(at::kFloat).reshape({-1}));
    c.fast_small = at::cat(f32);
    c.fast_ws = at::empty({kernels::mamba_step_workspace_size(p)}, at::kFloat);
    c.fast_out = at::empty({dm}, at::kFloat);
    c.conv_state = c.conv_state.contiguous();
    c.ssm_state = c.ssm_state.contiguous();
    c.fast_ready = true;
  }
  const float* s = c.fast_small.data_ptr<float>();
  p.conv_w = s;
  p.conv_b = conv_bias.defined() ? s + Di * W : nullptr;
  p.dt_b = s + Di * W + Di;
  p.A = s + Di * W + 2 * Di;
  p.D = p.A + Di * N;
  p.in_proj_b = in_proj->bias.defined() ? p.D + Di : nullptr;
  p.out_proj_b = out_proj->bias.defined() ? p.D + 3 * Di : nullptr;
  return p;
}

at::Tensor MambaMixerImpl::forward_step_fused(const at::Tensor& x, MambaLayerCache& c) {
  const int64_t dm = cfg.d_model;
  const kernels::MambaStepParams p = step_params(c);
  at::Tensor xin = x.reshape({dm}).to(at::kFloat).contiguous();  // [d_model]
  kernels::mamba_step(p, xin.data_ptr<float>(), c.conv_state.data_ptr<float>(),
                      c.ssm_state.data_ptr<float>(), c.fast_ws.data_ptr<float>(),
                      c.fast_out.data_ptr<float>());
  return c.fast_out.to(x.scalar_type(), /*non_blocking=*/false, /*copy=*/true).view({1, 1, dm});
}

// ---------------------------------------------------------------------------------------------
// Block

MambaBlockImpl::MambaBlockImpl(const MambaConfig& c, int64_t layer_idx, bool initialize) {
  norm = register_module("norm", std::make_shared<RMSNormImpl>(c.d_model, c.norm_eps));
  if (c.is_attention_layer(layer_idx)) {
    mixer = register_module("mixer", make_hybrid_attention(c, layer_idx));
  } else {
    mixer = register_module("mixer", std::static_pointer_cast<SequenceMixer>(
                                         std::make_shared<MambaMixerImpl>(c, initialize)));
  }
}

at::Tensor MambaBlockImpl::forward(const at::Tensor& residual, LayerCache* cache, int64_t pos,
                                   at::ScalarType compute_dtype) {
  at::Tensor h = norm->forward(residual, compute_dtype);  // [B, L, d_model]
  return residual + mixer->mix(h, cache, pos).to(at::kFloat);
}

// ---------------------------------------------------------------------------------------------
// LM


namespace {
// The modules quantize_int8 makes int8 (the Mamba mixers' projections and the head).
template <class F>
void for_each_int8_module(MambaLM& m, F f) {
  for (auto& l : m.layers)
    if (auto* mx = dynamic_cast<MambaMixerImpl*>(l->mixer.get()))
      for (LinearImpl* lin : {mx->in_proj.get(), mx->x_proj.get(), mx->dt_proj.get(), mx->out_proj.get()})
        f(*lin);
}
}  // namespace

MambaLM::MambaLM(MambaConfig cfg, bool initialize) : cfg_(std::move(cfg)) {
  cfg_.finalize();
  root_ = std::make_shared<torch::nn::Module>("MambaForCausalLM");
  backbone_ = root_->register_module("backbone", std::make_shared<torch::nn::Module>("MambaModel"));
  embeddings = backbone_->register_module("embeddings", Embedding(cfg_.vocab_size, cfg_.d_model));
  torch::nn::ModuleList list;
  for (int64_t i = 0; i < cfg_.n_layer; ++i) {
    auto b = std::make_shared<MambaBlockImpl>(cfg_, i, /*initialize=*/false);
    layers.push_back(b);
    list->push_back(b);
  }
  backbone_->register_module("layers", list);
  norm_f = backbone_->register_module("norm_f",
                                      std::make_shared<RMSNormImpl>(cfg_.d_model, cfg_.norm_eps));
  if (!cfg_.tie_embeddings)
    lm_head = root_->register_module("lm_head", Linear(cfg_.d_model, cfg_.vocab_size, false));
  if (initialize) init_weights(0);
}

void MambaLM::init_weights(uint64_t seed) {
  at::manual_seed(seed);
  at::NoGradGuard ng;
  embeddings->weight.normal_(0.0, 0.02);
  for (auto& b : layers) {
    b->norm->weight.fill_(1.0);
    if (auto* m = dynamic_cast<MambaMixerImpl*>(b->mixer.get())) {
      m->init_weights();
      m->out_proj->weight.div_(std::sqrt(static_cast<double>(cfg_.n_layer)));
    } else {
      b->mixer->apply([](torch::nn::Module& mod) {
        if (auto* lin = mod.as<LinearImpl>()) {
          lin->reset_parameters();
          if (lin->bias.defined()) lin->bias.zero_();
        }
      });
      // mamba_ssm's _init_weights rescales every out_proj.weight, attention ones included.
      if (auto* a = dynamic_cast<HybridAttentionImpl*>(b->mixer.get()))
        a->out_proj->weight.div_(std::sqrt(static_cast<double>(cfg_.n_layer)));
    }
  }
  norm_f->weight.fill_(1.0);
  if (lm_head) lm_head->weight.normal_(0.0, 0.02);
}

void MambaLM::set_backend(kernels::Backend b) {
  for (auto& l : layers)
    if (auto* m = dynamic_cast<MambaMixerImpl*>(l->mixer.get())) m->backend = b;
  for (auto& mod : root_->modules())
    if (auto* lin = dynamic_cast<LinearImpl*>(mod.get())) lin->backend = b;
}

namespace {
// The dtype parameter `name` has when the model runs in `dtype`: A_log and D stay fp32, int8
// weights stay int8 (the one rule, for to_dtype and for loading straight into a dtype).
at::ScalarType param_dtype(const std::string& name, at::ScalarType current, at::ScalarType dtype) {
  MVL_CHECK(dtype == at::kFloat || dtype == at::kBFloat16,
            "Mamba models run in float32 or bfloat16, not ", c10::toString(dtype));
  if (current == at::kChar) return current;
  const bool keep_fp32 = name.ends_with(".A_log") || name.ends_with(".D");
  return keep_fp32 ? at::kFloat : dtype;
}
}  // namespace

void MambaLM::to_dtype(at::ScalarType dtype) {
  at::NoGradGuard ng;
  for (auto& p : root_->named_parameters()) {
    const at::ScalarType target = param_dtype(p.key(), p.value().scalar_type(), dtype);
    if (p.value().scalar_type() != target) p.value().set_data(p.value().to(target));
  }
  dtype_ = dtype;
}

at::Tensor MambaLM::embed(const at::Tensor& ids) {
  check_token_ids(ids, cfg_.vocab_size);
  return embeddings->forward(ids);  // [B, L, d_model]
}

at::Tensor MambaLM::forward_hidden(const at::Tensor& embeds, LMCache* cache) {
  MVL_CHECK(embeds.dim() == 3 && embeds.size(2) == cfg_.d_model, "embeddings must be [B, L, ",
            cfg_.d_model, "]");
  LayerStackCache* mc =
      cache ? &LayerStackCache::check(cache, this, embeds.size(0), embeds.size(1)) : nullptr;
  if (mc) prepare_left_pad(*mc, embeds.size(1));
  const int64_t pos = mc ? mc->len : 0;
  at::Tensor h = embeds.to(at::kFloat);  // [B, L, d_model] residual stream, fp32
  for (size_t i = 0; i < layers.size(); ++i)
    h = layers[i]->forward(h, mc ? mc->layers[i].get() : nullptr, pos, dtype_);
  if (mc) mc->len += embeds.size(1);
  return norm_f->forward(h, dtype_);  // [B, L, d_model]
}

at::Tensor MambaLM::logits(const at::Tensor& hidden) {
  const at::Tensor& w = lm_head ? lm_head->weight : embeddings->weight;  // [V, d_model]
  const int64_t rows = hidden.numel() / std::max<int64_t>(hidden.size(-1), 1);
  // Decoding (a few rows, no autograd): the head is a memory-bound matrix-vector product; our
  // GEMV streams bf16 / int8 weights at half / a quarter of the bytes, where a bf16 GEMM on CPUs
  // without native bf16 arithmetic is slow.
  // Batch decode shares each weight read among the rows (kernels::linear_small).
  if (rows <= kernels::kSmallBatchRows && !at::GradMode::is_enabled() && w.device().is_cpu() &&
      w.is_contiguous() &&
      (w.scalar_type() == at::kFloat || w.scalar_type() == at::kBFloat16 ||
       w.scalar_type() == at::kChar)) {
    const kernels::MatrixRef head = lm_head ? matrix_ref(*lm_head) : matrix_ref(*embeddings);
    return kernels::linear_small(head, hidden, at::Tensor(), at::kFloat);  // [..., V]
  }
  if (w.scalar_type() == at::kChar) {  // int8 head, many rows: the GEMM per dequantised block
    const at::Tensor& scale = lm_head ? lm_head->weight_scale : embeddings->weight_scale;
    return int8_linear(hidden.to(at::kFloat), w, scale, at::Tensor());  // [..., V]
  }
  return at::linear(hidden.to(w.scalar_type()), w).to(at::kFloat);  // [..., V]
}

namespace {

// out = weight * x / rms(x) (RMSNorm in fp32; bf16 models round as RMSNormImpl does).
void rms_norm(const float* x, const float* w, float* out, int64_t n, double eps, bool bf16) {
  double ss = 0;
  for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
  const float r = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(n) + eps));
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] * r;
  if (bf16) kernels::round_bf16(out, n);
  for (int64_t i = 0; i < n; ++i) out[i] *= w[i];
  if (bf16) kernels::round_bf16(out, n);
}

// One attention layer of a hybrid stack as the fused step reads it: matrices in place, biases as
// fp32 copies (undefined when absent), the step's attention parameters (refreshed every step).
struct HybridAttentionRefs {
  kernels::MatrixRef in_proj, out_proj;  // [(H + 2 Hkv) hd, d_model], [d_model, H hd]
  at::Tensor in_b, out_b;                // fp32 copies, undefined when absent
  kernels::AttentionStepParams step;
};

// What a fused decode step of a Mamba stack keeps between tokens (LayerStackCache::decode_state).
struct MambaDecodeState : LayerCache {
  std::vector<kernels::MambaStepParams> params;  // per layer (Mamba layers)
  std::vector<HybridAttentionRefs> attn;         // per layer (attention layers of a hybrid)
  at::Tensor norm_w;                             // [n_layer + 1, d_model] fp32: layers', norm_f
  std::vector<float> residual, normed, ws;
  // Attention layers: in_proj output [q | k | v] ([H + 2 Hkv, hd]), context [H hd], out_proj
  // output [d_model], rotary cos / sin at the position, scores [H, score_stride].
  std::vector<float> qkv, ctx, attn_out, cos, sin, scores;
  int64_t score_stride = 0;
  std::vector<kernels::QuantizedVector> xq;  // per team member
};

// The attention layer of a hybrid the fused step can run: mamba_ssm's MHA (grouped KV heads
// included) with weights of the model dtype or int8.
const HybridAttentionImpl* fused_attention(const SequenceMixer* mixer, at::ScalarType dtype) {
  auto* a = dynamic_cast<const HybridAttentionImpl*>(mixer);
  if (!a) return nullptr;
  for (const Linear* l : {&a->in_proj, &a->out_proj}) {
    const at::Tensor& w = (*l)->weight;
    if (!w.device().is_cpu() || !w.is_contiguous() || (w.scalar_type() != dtype && !(*l)->is_int8()))
      return nullptr;
  }
  return a;
}

}  // namespace

bool MambaLM::can_decode_fused(const at::Tensor& embeds, LMCache* cache) const {
  if (!cache || embeds.dim() != 3 || embeds.size(0) != 1 || embeds.size(1) != 1 ||
      !embeds.device().is_cpu() || embeds.size(2) != cfg_.d_model)
    return false;
  for (size_t i = 0; i < layers.size(); ++i) {
    const SequenceMixer* mixer = layers[i]->mixer.get();
    if (auto* m = dynamic_cast<const MambaMixerImpl*>(mixer)) {
      if (!m->can_use_fused_step(embeds)) return false;
      continue;
    }
    // A hybrid's attention layer (the reference backend keeps it op by op): its KV cache as the
    // per-head kernel reads it.
    if (at::GradMode::is_enabled() || kernels::default_backend() == kernels::Backend::Reference ||
        !fused_attention(mixer, dtype_))
      return false;
    auto* c = dynamic_cast<LayerStackCache*>(cache);
    if (!c || c->layers.size() != layers.size() || !kv_cache_fusable(c->layers[i].get(), dtype_))
      return false;
  }
  const at::Tensor& head = lm_head ? lm_head->weight : embeddings->weight;
  const auto dt = head.scalar_type();
  return head.is_contiguous() && (dt == at::kFloat || dt == at::kBFloat16 || dt == at::kChar);
}

at::Tensor MambaLM::forward_embeds(const at::Tensor& embeds, LMCache* cache, bool last_only) {
  if (can_decode_fused(embeds, cache)) {
    LayerStackCache& mc = LayerStackCache::check(cache, this, 1, 1);
    if (mc.left_pad.empty()) return decode_fused(embeds, mc);
  }
  return CausalLM::forward_embeds(embeds, cache, last_only);
}

at::Tensor MambaLM::decode_fused(const at::Tensor& embeds, LayerStackCache& mc) {
  const int64_t dm = cfg_.d_model, nl = static_cast<int64_t>(layers.size());
  const bool bf16 = dtype_ == at::kBFloat16;
  const int64_t pos = mc.len;
  // Attention layers of a hybrid: every KV cache at `pos` with room for one more token (an
  // overflow is refused here, before anything changes).
  std::vector<KVCache*> kvs(static_cast<size_t>(nl), nullptr);
  for (int64_t i = 0; i < nl; ++i) {
    if (dynamic_cast<MambaMixerImpl*>(layers[i]->mixer.get())) continue;
    kvs[static_cast<size_t>(i)] = &kv_cache_for_step(mc.layers[i].get(), pos);
  }
  for (KVCache* kv : kvs)
    if (kv) kv->reserve(pos + 1);
  kernels::DecodeTeamLease lease = kernels::decode_team();
  if (!mc.decode_state) {
    auto st = std::make_unique<MambaDecodeState>();
    int64_t ws = 0, qkv_rows = 0, ctx_len = 0, rot = 0;
    std::vector<at::Tensor> norms;
    st->params.resize(static_cast<size_t>(nl));
    st->attn.resize(static_cast<size_t>(nl));
    for (int64_t i = 0; i < nl; ++i) {
      if (auto* m = dynamic_cast<MambaMixerImpl*>(layers[i]->mixer.get())) {
        st->params[i] = m->step_params(static_cast<MambaLayerCache&>(*mc.layers[i]));
        ws = std::max(ws, kernels::mamba_step_workspace_size(st->params[i]));
      } else {
        const HybridAttentionImpl* a = fused_attention(layers[i]->mixer.get(), dtype_);
        MVL_CHECK(a, "fused decode: layer ", i, " is neither a Mamba mixer nor a fusable attention");
        HybridAttentionRefs& r = st->attn[i];
        r.in_proj = matrix_ref(*a->in_proj);
        r.out_proj = matrix_ref(*a->out_proj);
        if (a->in_proj->bias.defined()) r.in_b = a->in_proj->bias.detach().to(at::kFloat).contiguous();
        if (a->out_proj->bias.defined()) r.out_b = a->out_proj->bias.detach().to(at::kFloat).contiguous();
        qkv_rows = std::max(qkv_rows, r.in_proj.rows);
        ctx_len = std::max(ctx_len, a->cfg.num_heads * a->cfg.head_dim);
        rot = std::max(rot, a->core.rotary.dim());
      }
      norms.push_back(layers[i]->norm->weight.to(at::kFloat));
    }
    norms.push_back(norm_f->weight.to(at::kFloat));
    st->norm_w = at::stack(norms).contiguous();
    st->residual.resize(dm);
    st->normed.resize(dm);
    st->ws.resize(ws);
    st->qkv.resize(static_cast<size_t>(qkv_rows));
    st->ctx.resize(static_cast<size_t>(ctx_len));
    st->attn_out.resize(static_cast<size_t>(qkv_rows > 0 ? dm : 0));
    st->cos.resize(static_cast<size_t>(std::max<int64_t>(rot, 1)));
    st->sin.resize(static_cast<size_t>(std::max<int64_t>(rot, 1)));
    mc.decode_state = std::move(st);
  }
  auto& st = static_cast<MambaDecodeState&>(*mc.decode_state);
  st.xq.resize(static_cast<size_t>(lease.team->size()));
  // Per step, attention layers: rotary cos / sin at pos (one configuration for every attention
  // layer of a stack), the caches' storage (it may have grown), the scores scratch.
  bool rotary_done = false;
  for (int64_t i = 0; i < nl; ++i) {
    KVCache* kv = kvs[static_cast<size_t>(i)];
    if (!kv) continue;
    const AttentionCore& core = static_cast<const HybridAttentionImpl*>(layers[i]->mixer.get())->core;
    if (!rotary_done) rotary_row(core.rotary, pos, dtype_, st.cos.data(), st.sin.data());
    rotary_done = true;
    kernels::AttentionStepParams& p = st.attn[i].step;
    p = attention_step_params(core, *kv, pos, bf16, st.cos.data(), st.sin.data());
    if (st.score_stride < p.capacity || st.scores.size() < static_cast<size_t>(p.heads * p.capacity)) {
      st.score_stride = std::max(st.score_stride, p.capacity);
      st.scores.resize(static_cast<size_t>(p.heads * st.score_stride));
    }
  }
  at::Tensor e = embeds.reshape({dm}).to(at::kFloat).contiguous();
  std::memcpy(st.residual.data(), e.data_ptr<float>(), sizeof(float) * dm);
  const kernels::MatrixRef head =
      lm_head ? matrix_ref(*lm_head) : matrix_ref(*embeddings);  // [V, d_model]
  const int64_t V = head.rows;
  at::Tensor logits = at::empty({1, 1, V}, at::kFloat);
  float* out = logits.data_ptr<float>();
  float* res = st.residual.data();
  float* normed = st.normed.data();
  const float* nw = st.norm_w.data_ptr<float>();
  std::vector<float> mix_out(bf16 ? dm : 0);
  float* mix = bf16 ? mix_out.data() : nullptr;  // bf16: the mixer output, rounded before the add
  const int64_t sstride = st.score_stride;
  // Attention layer i of a hybrid for the team: in_proj rows (rounded to bf16 for a bf16 model,
  // as a bf16 Linear's output), each KV head's k, v appended to its cache, each query head
  // attended (kernels/attention_step.h), out_proj rows added to the residual (fp32) or written
  // to `mix`.
  auto attention = [&](kernels::ThreadTeam::Member& m, kernels::QuantizedVector& xq, int64_t i) {
    const HybridAttentionRefs& r = st.attn[i];
    const kernels::AttentionStepParams& ap = r.step;
    const int64_t H = ap.heads, Hkv = ap.kv_heads, hd = ap.head_dim, rows_in = r.in_proj.rows;
    const float* in_b = r.in_b.defined() ? r.in_b.data_ptr<float>() : nullptr;
    const float* out_b = r.out_b.defined() ? r.out_b.data_ptr<float>() : nullptr;
    float *qkv = st.qkv.data(), *ctx = st.ctx.data();  // qkv: [H + 2 Hkv, hd] = q | k | v
    if (r.in_proj.kind == kernels::MatrixRef::Int8) xq.set(normed, dm);
    const int64_t ir = kernels::gemv_chunk_rows(r.in_proj);
    m.for_chunks((rows_in + ir - 1) / ir, [&](int64_t c) {
      const int64_t r0 = c * ir, r1 = std::min(rows_in, r0 + ir);
      kernels::gemv_rows(r.in_proj, normed, &xq, qkv, in_b, r0, r1);
      if (bf16) kernels::round_bf16(qkv + r0, r1 - r0);
    });
    m.for_chunks(Hkv, [&](int64_t g) {
      kernels::attention_step_kv(ap, g, qkv + (H + g) * hd, qkv + (H + Hkv + g) * hd);
    });
    m.for_chunks(H, [&](int64_t hh) {
      kernels::attention_step_query(ap, hh, qkv + hh * hd, st.scores.data() + hh * sstride, ctx);
    });
    if (r.out_proj.kind == kernels::MatrixRef::Int8) xq.set(ctx, H * hd);
    const int64_t orow = kernels::gemv_chunk_rows(r.out_proj);
    float* tmp = st.attn_out.data();
    m.for_chunks((dm + orow - 1) / orow, [&](int64_t c) {
      const int64_t o0 = c * orow, o1 = std::min(dm, o0 + orow);
      if (mix) {
        kernels::gemv_rows(r.out_proj, ctx, &xq, mix, out_b, o0, o1);
        return;
      }
      kernels::gemv_rows(r.out_proj, ctx, &xq, tmp, out_b, o0, o1);
      for (int64_t o = o0; o < o1; ++o) res[o] += tmp[o];
    });
  };
  lease.team->run([&](kernels::ThreadTeam::Member& m) {
    kernels::QuantizedVector& xq = st.xq[static_cast<size_t>(m.id())];
    for (int64_t i = 0; i < nl; ++i) {
      m.single([&] { rms_norm(res, nw + i * dm, normed, dm, cfg_.norm_eps, bf16); });
      if (kvs[static_cast<size_t>(i)]) {
        attention(m, xq, i);
      } else {
        auto& lc = static_cast<MambaLayerCache&>(*mc.layers[i]);
        kernels::mamba_step_team(m, st.params[i], normed, lc.conv_state.data_ptr<float>(),
                                 lc.ssm_state.data_ptr<float>(), st.ws.data(), mix ? mix : res,
                                 /*accumulate=*/mix == nullptr, xq);
      }
      if (mix)  // the mixer's output is bf16 in the op-by-op path: round it before the residual add
        m.single([&] {
          kernels::round_bf16(mix, dm);
          for (int64_t k = 0; k < dm; ++k) res[k] += mix[k];
        });
    }
    m.single([&] { rms_norm(res, nw + nl * dm, normed, dm, cfg_.norm_eps, bf16); });
    if (head.kind == kernels::MatrixRef::Int8) xq.set(normed, dm);
    const int64_t rows = kernels::gemv_chunk_rows(head);
    m.for_chunks((V + rows - 1) / rows, [&](int64_t c) {
      kernels::gemv_rows(head, normed, &xq, out, nullptr, c * rows, std::min(V, (c + 1) * rows));
    });
  });
  for (KVCache* kv : kvs)
    if (kv) kv->len = pos + 1;
  mc.len += 1;
  return logits;
}

std::unique_ptr<LMCache> MambaLM::make_cache(int64_t batch, int64_t max_len) {
  auto c = std::make_unique<LayerStackCache>(this, batch, max_len);
  const at::Device dev = embeddings->weight.device();
  for (auto& l : layers) c->layers.push_back(l->mixer->make_cache(batch, max_len, dtype_, dev));
  return c;
}

std::string MambaLM::checkpoint_key(const std::string& name) const {
  return checkpoint_key(name, cfg_.layout);
}

std::string MambaLM::checkpoint_key(const std::string& name, const std::string& layout) {
  if (layout == "original" && name == "backbone.embeddings.weight")
    return "backbone.embedding.weight";
  if (layout == "original" && name == "backbone.embeddings.weight_scale")
    return "backbone.embedding.weight_scale";
  return name;
}

std::unique_ptr<MambaLM> MambaLM::load(const std::filesystem::path& dir, at::ScalarType dtype) {
  if (dtype != at::ScalarType::Undefined) param_dtype("", at::kFloat, dtype);  // Error if unsupported
  const auto cfg_path = dir / "config.json";
  MVL_CHECK(std::filesystem::exists(cfg_path), dir.string(),
            ": no config.json (expected a Hugging Face model folder)");
  MambaConfig cfg = MambaConfig::from_json(io::read_json_file(cfg_path), cfg_path.string());
  io::CheckpointFolder ckpt(dir);  // the header: names and shapes
  check_weights_match_config(cfg.expected_weights(), ckpt, cfg_path.string());  // before building
  auto model = std::make_unique<MambaLM>(cfg, /*initialize=*/false);  // every tensor is loaded
  if (cfg.quantization == "int8") {  // int8 weights and their scales are what the file holds
    for_each_int8_module(*model, [](LinearImpl& l) { l.prepare_int8(); });
    if (model->lm_head)
      model->lm_head->prepare_int8();
    else
      model->embeddings->prepare_int8();
    for (auto& p : model->root_->parameters()) p.requires_grad_(false);
  }
  io::LoadOptions opt;
  opt.keys_for = [](const std::string& name) -> std::vector<std::string> {
    if (name == "backbone.embeddings.weight")
      return {"backbone.embeddings.weight", "backbone.embedding.weight"};
    if (name == "backbone.embeddings.weight_scale")
      return {"backbone.embeddings.weight_scale", "backbone.embedding.weight_scale"};
    return {name};
  };
  const bool tied = cfg.tie_embeddings;
  opt.ignore_extra = [tied](const std::string& key) { return tied && key == "lm_head.weight"; };
  if (dtype != at::ScalarType::Undefined)
    opt.dtype_for = [dtype](const std::string& name, at::ScalarType current) {
      return param_dtype(name, current, dtype);
    };
  io::load_module(*model->root_, ckpt, opt);
  if (dtype != at::ScalarType::Undefined) model->to_dtype(dtype);  // converts nothing: records it
  model->source_dir_ = dir;
  return model;
}

void MambaLM::quantize_int8() {
  for_each_int8_module(*this, [](LinearImpl& l) { l.quantize_int8(); });
  if (lm_head)
    lm_head->quantize_int8();
  else
    embeddings->quantize_int8();
  for (auto& p : root_->parameters()) p.requires_grad_(false);  // inference only
  cfg_.quantization = "int8";
}

MambaConfig MambaLM::save_config() const {
  MambaConfig out = cfg_;
  if (out.attn_layer_idx.empty() || out.layout == "original") return out;
  // Hybrids are written in mamba_ssm's layout (transformers' MambaConfig has no attention layers).
  MVL_CHECK(out.d_inner == out.expand * out.d_model,
            "cannot save this hybrid in mamba_ssm's layout: ", "intermediate_size = ", out.d_inner,
            " is not expand * d_model = ", out.expand * out.d_model);
  MVL_CHECK(out.norm_eps == 1e-5,
            "cannot save this hybrid in mamba_ssm's layout: its norm epsilon ", out.norm_eps,
            " is not mamba_ssm's fixed 1e-5");
  out.layout = "original";
  out.unpadded_vocab_size = out.vocab_size;
  if (out.vocab_size % out.pad_vocab_size_multiple != 0) out.pad_vocab_size_multiple = 1;
  return out;
}

void MambaLM::save(const std::filesystem::path& dir) const {
  std::filesystem::create_directories(dir);
  const MambaConfig out = save_config();
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& p : root_->named_parameters())
    tensors.emplace_back(checkpoint_key(p.key(), out.layout), p.value());
  for (const auto& b : root_->named_buffers())  // int8 weight scales
    tensors.emplace_back(checkpoint_key(b.key(), out.layout), b.value());
  // mamba_ssm's loader expects lm_head.weight even when tied (its state dict has it).
  if (out.layout == "original" && out.tie_embeddings && out.quantization.empty())
    tensors.emplace_back("lm_head.weight", embeddings->weight);
  io::save_safetensors(dir / "model.safetensors", tensors, {{"format", "pt"}});
  io::write_json_file(dir / "config.json", out.to_json());
  copy_tokenizer_files(source_dir_, dir);
}

}  // namespace mambavl::models
