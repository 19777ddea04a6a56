// MambaOut and mambaout_ssm (see mambaout.h): config, modules, init, forward, load / save,
// the ImageClassifier / VisionEncoder wrappers and the registry's factories.
#include "models/mambaout.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/nn/modules/container/modulelist.h>

#include <array>
#include <cmath>
#include <filesystem>

#include "common/error.h"
#include "common/shape.h"
#include "io/checkpoint.h"
#include "kernels/selective_scan.h"
#include "io/config_util.h"
#include "models/vision_factories.h"

namespace mambavl::models {

namespace fs = std::filesystem;

namespace {

bool starts_with(const std::string& s, const std::string& p) { return s.rfind(p, 0) == 0; }

std::vector<int64_t> get_int_list(const nlohmann::json& j, const std::string& key,
                                  const std::string& file) {
  const auto& v = j.at(key);
  MVL_CHECK(v.is_array(), file, ": key '", key, "' must be a list of integers, got ", v.dump());
  std::vector<int64_t> out;
  for (const auto& e : v) {
    MVL_CHECK(e.is_number_integer(), file, ": key '", key, "' must be a list of integers, got ",
              v.dump());
    out.push_back(e.get<int64_t>());
  }
  return out;
}

std::array<double, 3> get_triple(const nlohmann::json& j, const std::string& key,
                                 const std::string& file) {
  const auto& v = j.at(key);
  MVL_CHECK(v.is_array() && v.size() == 3, file, ": key '", key,
            "' must be a list of 3 numbers, got ", v.dump());
  std::array<double, 3> out{};
  for (size_t i = 0; i < 3; ++i) {
    MVL_CHECK(v[i].is_number(), file, ": key '", key, "' must be a list of 3 numbers, got ",
              v.dump());
    out[i] = v[i].get<double>();
  }
  return out;
}

struct Preset {
  const char* name;
  std::vector<int64_t> depths, dims;
};

const std::vector<Preset>& presets() {
  static const std::vector<Preset> p = {
      {"femto", {3, 3, 9, 3}, {48, 96, 192, 288}},   {"kobe", {3, 3, 15, 3}, {48, 96, 192, 288}},
      {"tiny", {3, 3, 9, 3}, {96, 192, 384, 576}},   {"small", {3, 4, 27, 3}, {96, 192, 384, 576}},
      {"base", {3, 4, 27, 3}, {128, 256, 512, 768}},
  };
  return p;
}

// timm's trunc_normal_(t, mean 0, std, a, b) (absolute bounds), as PyTorch draws it: uniform in
// [cdf(a), cdf(b)] mapped through the inverse normal CDF. Draws from `gen`.
void trunc_normal_(at::Tensor& t, double std, const at::Generator& gen, double a = -2.0,
                   double b = 2.0) {
  auto cdf = [](double x) { return (1.0 + std::erf(x / std::sqrt(2.0))) / 2.0; };
  const double l = cdf(a / std), u = cdf(b / std);
  t.uniform_(2 * l - 1, 2 * u - 1, gen);
  t.erfinv_();
  t.mul_(std * std::sqrt(2.0));
  t.clamp_(a, b);
}

// timm's hub config.json: {"architecture": "mambaout_<size>", "num_classes", "num_features",
// "global_pool", "pretrained_cfg": {...}, "label_names", ...}.
MambaOutConfig from_timm_json(const nlohmann::json& j, const std::string& file,
                              const std::string& arch) {
  const std::string v = arch.substr(std::string("mambaout_").size());
  bool known = false;
  for (const auto& p : presets()) known = known || v == p.name;
  MVL_CHECK(known, file, ": timm architecture '", arch,
            "' is not supported (supported: mambaout_femto, mambaout_kobe, mambaout_tiny, "
            "mambaout_small, mambaout_base, or our 'mambaout' / 'mambaout_ssm')");
  cfg::check_known_keys(
      j,
      {"architecture", "num_classes", "num_features", "global_pool", "pretrained_cfg",
       "label_names", "label_descriptions", "model_args", "classes"},
      file);
  MambaOutConfig c = MambaOutConfig::preset(v);
  c.num_classes = cfg::get_int(j, "num_classes", file, 1000);  // 0: no classifier (head.fc)
  if (j.contains("num_features")) {
    const int64_t nf = cfg::get_int(j, "num_features", file, 0);
    MVL_CHECK(nf == c.dims.back(), file, ": num_features = ", nf, " but ", arch,
              " has a last stage of ", c.dims.back(), " channels");
  }
  const std::string pool = cfg::get_string(j, "global_pool", file, "avg");
  MVL_CHECK(pool == "avg", file, ": global_pool '", pool, "' is not supported (only 'avg')");
  if (j.contains("model_args")) {
    const auto& ma = j.at("model_args");
    cfg::check_known_keys(ma, {"drop_path_rate", "num_classes"}, file, "model_args");
    c.drop_path_rate = cfg::get_double(ma, "drop_path_rate", file, c.drop_path_rate);
    c.num_classes = cfg::get_int(ma, "num_classes", file, c.num_classes);
  }
  if (j.contains("pretrained_cfg")) {
    // Only the preprocessing entries matter; the rest is descriptive (tag, license, ...).
    // crop_pct cannot be represented (ImagePreprocess has no such field): timm resizes to
    // size / crop_pct, then center-crops `size` ("center"; "squash" resizes both sides to
    // size / crop_pct first). Only crop_pct 1.0 equals our "crop" / "squash" modes; it is the value
    // of all five MambaOut sizes in timm. Any other value, or none (timm then uses its default
    // 0.875), is an Error rather than a silently different input.
    const auto& pc = j.at("pretrained_cfg");
    MVL_CHECK(pc.is_object(), file, ": key 'pretrained_cfg' must be a JSON object");
    MVL_CHECK(pc.contains("crop_pct") && !pc.at("crop_pct").is_null(), file,
              ": pretrained_cfg.crop_pct is missing (timm would then use its default 0.875); only "
              "crop_pct 1.0 is supported (our preprocessing resizes straight to the input size)");
    const double crop_pct = cfg::get_double(pc, "crop_pct", file, 1.0);
    MVL_CHECK(std::abs(crop_pct - 1.0) <= 1e-9, file, ": pretrained_cfg.crop_pct = ", crop_pct,
              " is not supported: only 1.0 (timm's value for MambaOut) can be expressed by our "
              "preprocessing, which has no resize-then-crop ratio (timm would resize to "
              "input_size / crop_pct and center-crop)");
    io::ImagePreprocess& pp = c.preprocess;
    if (pc.contains("input_size")) {
      std::vector<int64_t> in = get_int_list(pc, "input_size", file);
      MVL_CHECK(in.size() == 3 && in[0] == 3 && in[1] == in[2] && in[1] > 0, file,
                ": pretrained_cfg.input_size must be [3, S, S], got ", pc.at("input_size").dump());
      pp.size = in[1];
    }
    if (pc.contains("interpolation"))
      pp.resample = io::parse_resample(cfg::get_string(pc, "interpolation", file, "bicubic"));
    const std::string crop = cfg::get_string(pc, "crop_mode", file, "center");
    MVL_CHECK(crop == "center" || crop == "squash", file, ": pretrained_cfg.crop_mode '", crop,
              "' is not supported ('center' or 'squash')");
    pp.mode = crop == "squash" ? "squash" : "crop";
    if (pc.contains("mean")) pp.mean = get_triple(pc, "mean", file);
    if (pc.contains("std")) pp.std = get_triple(pc, "std", file);
  }
  c.validate(file);
  return c;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Config

std::vector<std::string> MambaOutConfig::variants() {
  std::vector<std::string> out;
  for (const auto& p : presets()) out.emplace_back(p.name);
  return out;
}

MambaOutConfig MambaOutConfig::preset(const std::string& variant) {
  for (const auto& p : presets())
    if (variant == p.name) {
      MambaOutConfig c;
      c.variant = p.name;
      c.depths = p.depths;
      c.dims = p.dims;
      return c;
    }
  MVL_FAIL("unknown MambaOut variant '", variant, "' (known: ", join(variants()), ")");
}

int64_t MambaOutConfig::total_blocks() const {
  int64_t n = 0;
  for (int64_t d : depths) n += d;
  return n;
}

void MambaOutConfig::validate(const std::string& file) const {
  MVL_CHECK(!depths.empty() && depths.size() == dims.size(), file,
            ": 'depths' and 'dims' must be non-empty lists of the same length, got ", depths.size(),
            " and ", dims.size());
  MVL_CHECK(static_cast<int64_t>(depths.size()) <= kMaxStages, file, ": ", depths.size(),
            " stages (length of 'depths' / 'dims'); at most ", kMaxStages, " are supported");
  for (size_t i = 0; i < depths.size(); ++i) {
    MVL_CHECK(depths[i] >= 1 && depths[i] <= kMaxDepth, file, ": depths[", i, "] = ", depths[i],
              " must be in [1, ", kMaxDepth, "]");
    MVL_CHECK(dims[i] >= 2 && dims[i] <= kMaxDim, file, ": dims[", i, "] = ", dims[i],
              " must be in [2, ", kMaxDim, "]");
  }
  MVL_CHECK(num_classes >= 0 && num_classes <= kMaxClasses, file, ": num_classes = ", num_classes,
            " must be in [0, ", kMaxClasses, "] (0: no classifier, encoder only)");
  MVL_CHECK(drop_path_rate >= 0.0 && drop_path_rate < 1.0, file,
            ": drop_path_rate = ", drop_path_rate, " must be in [0, 1)");
  MVL_CHECK(preprocess.size > 0 && preprocess.size <= kMaxImageSize, file,
            ": the image size must be in [1, ", kMaxImageSize, "], got ", preprocess.size);
  if (ssm) {
    MVL_CHECK(ssm_cfg.d_state >= 1 && ssm_cfg.d_state <= kMaxDState, file,
              ": ssm.d_state = ", ssm_cfg.d_state, " must be in [1, ", kMaxDState, "]");
    MVL_CHECK(ssm_cfg.dt_rank >= 0 && ssm_cfg.dt_rank <= kMaxDim, file,
              ": ssm.dt_rank = ", ssm_cfg.dt_rank, " must be in [1, ", kMaxDim, "] (or \"auto\")");
  }
  const double n = num_parameters();
  MVL_CHECK(n <= kMaxParameters, file, ": this configuration has ", n, " parameters; at most ",
            kMaxParameters, " are supported");
}

double MambaOutConfig::num_parameters() const {
  auto conv = [](double in, double out, double k, double groups) {
    return out * (in / groups) * k * k + out;  // weight + bias
  };
  auto lin = [](double in, double out, bool bias) { return in * out + (bias ? out : 0.0); };
  auto ln = [](double d) { return 2.0 * d; };
  const double d0 = static_cast<double>(dims[0]);
  const double half = static_cast<double>(dims[0] / 2);
  double n = conv(3, half, 3, 1) + ln(half) + conv(half, d0, 3, 1) + ln(d0);  // stem
  for (size_t s = 0; s < dims.size(); ++s) {
    const double C = static_cast<double>(dims[s]);
    if (s > 0) n += conv(static_cast<double>(dims[s - 1]), C, 3, 1) + ln(C);  // downsample
    const double h = static_cast<double>(hidden_dim(dims[s]));
    double block = ln(C) + lin(C, 2 * h, true) + conv(C, C, kKernel, C) + lin(h, C, true);
    if (ssm) {
      const double R = static_cast<double>(ssm_cfg.rank_for(dims[s]));
      const double N = static_cast<double>(ssm_cfg.d_state);
      const double core = lin(C, R + 2 * N, false) + lin(R, C, true) + C * N + C;
      block += (ssm_cfg.bidirectional ? 2.0 : 1.0) * core;
    }
    n += static_cast<double>(depths[s]) * block;
  }
  const double C = static_cast<double>(dims.back()), Hd = kHeadRatio * C;
  n += ln(C) + lin(C, Hd, true) + ln(Hd);  // norm, head.fc1, head.norm
  if (num_classes > 0) n += lin(Hd, static_cast<double>(num_classes), true);  // head.fc2
  return n;
}

ExpectedWeights MambaOutConfig::expected_weights(const std::string& fields) const {
  ExpectedWeights w;
  w.num_parameters = num_parameters();
  auto field = [&](const char* key, size_t i) {
    return fields + key + "[" + std::to_string(i) + "]";
  };
  // Official keys, then timm's (MambaOutImpl::timm_key).
  const int64_t d0 = dims[0];
  w.tensor({"downsample_layers.0.conv1.weight", "stem.conv1.weight"},
           {dim(d0 / 2, field("dims", 0), field("dims", 0) + " / 2"), fixed(3), fixed(3),
            fixed(3)});
  w.tensor({"downsample_layers.0.conv2.weight", "stem.conv2.weight"},
           {dim(d0, field("dims", 0)), dim(d0 / 2, field("dims", 0), field("dims", 0) + " / 2"),
            fixed(3), fixed(3)});
  for (size_t s = 0; s < dims.size(); ++s) {
    const std::string S = std::to_string(s), C = field("dims", s);
    const int64_t c = dims[s], h = hidden_dim(dims[s]);
    if (s > 0)
      w.tensor(
          {"downsample_layers." + S + ".conv.weight", "stages." + S + ".downsample.conv.weight"},
          {dim(c, C), dim(dims[s - 1], field("dims", s - 1)), fixed(3), fixed(3)});
    const std::vector<std::string> blocks = {"stages." + S + ".", "stages." + S + ".blocks."};
    auto keys = [&](const std::string& k) {
      return std::vector<std::string>{blocks[0] + "0." + k, blocks[1] + "0." + k};
    };
    w.tensor(keys("fc1.weight"), {dim(2 * h, C, "2 × int(8/3 × " + C + ")"), dim(c, C)});
    w.tensor(keys("conv.weight"), {dim(c, C), fixed(1), fixed(kKernel), fixed(kKernel)});
    w.tensor(keys("fc2.weight"), {dim(c, C), dim(h, C, "int(8/3 × " + C + ")")});
    w.layer_count(blocks, depths[s], field("depths", s));
  }
  const std::string C = field("dims", dims.size() - 1);
  const int64_t Hd = kHeadRatio * dims.back();
  w.tensor({"head.fc1.weight", "head.pre_logits.fc.weight"},
           {dim(Hd, C, std::to_string(kHeadRatio) + " × " + C), dim(dims.back(), C)});
  if (num_classes > 0)
    w.tensor({"head.fc2.weight", "head.fc.weight"},
             {dim(num_classes, fields + "num_classes"),
              dim(Hd, C, std::to_string(kHeadRatio) + " × " + C)});
  return w;
}

MambaOutConfig MambaOutConfig::from_json(const nlohmann::json& j, const std::string& file) {
  MVL_CHECK(j.is_object(), file, ": must be a JSON object");
  const std::string arch = cfg::get_string(j, "architecture", file, "mambaout");
  if (arch != "mambaout" && arch != "mambaout_ssm") {
    MVL_CHECK(starts_with(arch, "mambaout_"), file, ": architecture '", arch,
              "' is not MambaOut ('mambaout', 'mambaout_ssm' or timm's 'mambaout_<size>')");
    return from_timm_json(j, file, arch);
  }
  cfg::check_known_keys(j,
                        {"architecture", "variant", "depths", "dims", "num_classes",
                         "drop_path_rate", "image_size", "preprocess", "ssm", "classes"},
                        file);
  MambaOutConfig c;
  c.ssm = arch == "mambaout_ssm";
  c.variant = cfg::get_string(j, "variant", file, "");
  if (!c.variant.empty()) {
    bool known = false;
    for (const auto& p : presets()) known = known || c.variant == p.name;
    MVL_CHECK(known, file, ": unknown MambaOut variant '", c.variant,
              "' (known: ", join(variants()), ")");
    MambaOutConfig p = preset(c.variant);
    c.depths = p.depths;
    c.dims = p.dims;
  }
  const bool has_depths = j.contains("depths"), has_dims = j.contains("dims");
  if (c.variant.empty())
    MVL_CHECK(has_depths && has_dims, file, ": give either 'variant' (", join(variants()),
              ") or both 'depths' and 'dims'");
  if (has_depths) {
    std::vector<int64_t> d = get_int_list(j, "depths", file);
    MVL_CHECK(c.variant.empty() || d == c.depths, file, ": depths ", j.at("depths").dump(),
              " contradict variant '", c.variant, "'");
    c.depths = d;
  }
  if (has_dims) {
    std::vector<int64_t> d = get_int_list(j, "dims", file);
    MVL_CHECK(c.variant.empty() || d == c.dims, file, ": dims ", j.at("dims").dump(),
              " contradict variant '", c.variant, "'");
    c.dims = d;
  }
  c.num_classes = cfg::get_int(j, "num_classes", file, 1000);
  c.drop_path_rate = cfg::get_double(j, "drop_path_rate", file, 0.0);
  const int64_t image_size = cfg::get_int(j, "image_size", file, 0);
  if (j.contains("preprocess")) {
    c.preprocess = io::ImagePreprocess::from_json(j.at("preprocess"), file);
    MVL_CHECK(image_size == 0 || image_size == c.preprocess.size, file, ": image_size ", image_size,
              " differs from preprocess.size ", c.preprocess.size);
  } else if (j.contains("image_size")) {
    MVL_CHECK(image_size > 0, file, ": image_size = ", image_size, " must be positive");
    c.preprocess = io::ImagePreprocess::imagenet(image_size);
  }
  if (j.contains("ssm")) {
    MVL_CHECK(c.ssm, file, ": key 'ssm' is only for architecture 'mambaout_ssm'");
    const auto& s = j.at("ssm");
    cfg::check_known_keys(s, {"d_state", "dt_rank", "bidirectional"}, file, "ssm");
    c.ssm_cfg.d_state = cfg::get_int(s, "d_state", file, c.ssm_cfg.d_state);
    if (s.contains("dt_rank") && s.at("dt_rank").is_string()) {
      MVL_CHECK(s.at("dt_rank") == "auto", file, ": ssm.dt_rank must be an integer or \"auto\"");
      c.ssm_cfg.dt_rank = 0;
    } else {
      c.ssm_cfg.dt_rank = cfg::get_int(s, "dt_rank", file, 0);
      MVL_CHECK(!s.contains("dt_rank") || c.ssm_cfg.dt_rank >= 1, file,
                ": ssm.dt_rank must be >= 1 or \"auto\", got ", c.ssm_cfg.dt_rank);
    }
    c.ssm_cfg.bidirectional = cfg::get_bool(s, "bidirectional", file, true);
  }
  c.validate(file);
  return c;
}

nlohmann::json MambaOutConfig::to_json() const {
  nlohmann::json j;
  j["architecture"] = ssm ? "mambaout_ssm" : "mambaout";
  if (!variant.empty()) j["variant"] = variant;
  j["depths"] = depths;
  j["dims"] = dims;
  j["num_classes"] = num_classes;
  j["drop_path_rate"] = drop_path_rate;
  j["preprocess"] = preprocess.to_json();
  if (ssm) {
    nlohmann::json s;
    s["d_state"] = ssm_cfg.d_state;
    if (ssm_cfg.dt_rank > 0)
      s["dt_rank"] = ssm_cfg.dt_rank;
    else
      s["dt_rank"] = "auto";
    s["bidirectional"] = ssm_cfg.bidirectional;
    j["ssm"] = s;
  }
  return j;
}

// ---------------------------------------------------------------------------------------------
// Layers

Conv2dImpl::Conv2dImpl(int64_t in, int64_t out, int64_t kernel, int64_t stride_, int64_t padding_,
                       int64_t groups_)
    : stride(stride_), padding(padding_), groups(groups_) {
  weight = register_parameter("weight", at::empty({out, in / groups_, kernel, kernel}));
  bias = register_parameter("bias", at::empty({out}));
}

at::Tensor Conv2dImpl::forward(const at::Tensor& x) const {
  return at::conv2d(x, weight, bias, {stride, stride}, {padding, padding}, {1, 1}, groups);
}

LayerNormImpl::LayerNormImpl(int64_t dim, double eps_) : eps(eps_) {
  weight = register_parameter("weight", at::empty({dim}));
  bias = register_parameter("bias", at::empty({dim}));
}

at::Tensor LayerNormImpl::forward(const at::Tensor& x) const {
  return at::layer_norm(x, {weight.size(0)}, weight, bias, eps);
}

MambaOutSsmImpl::MambaOutSsmImpl(int64_t dim_, const MambaOutSsmConfig& c)
    : dim(dim_), d_state(c.d_state), dt_rank(c.rank_for(dim_)) {
  x_proj = register_module("x_proj", Linear(dim, dt_rank + 2 * d_state, false));
  dt_proj = register_module("dt_proj", Linear(dt_rank, dim, true));
  A_log = register_parameter("A_log", at::empty({dim, d_state}));
  D = register_parameter("D", at::empty({dim}));
}

void MambaOutSsmImpl::init_weights(std::optional<at::Generator> gen) {
  at::NoGradGuard ng;
  // x_proj: PyTorch's nn.Linear default (LinearImpl::reset_parameters), from `gen`.
  const double xb = 1.0 / std::sqrt(static_cast<double>(x_proj->in_features));
  x_proj->weight.uniform_(-xb, xb, gen);
  const double std = std::pow(static_cast<double>(dt_rank), -0.5);
  dt_proj->weight.uniform_(-std, std, gen);
  const double dt_min = 1e-3, dt_max = 0.1, dt_floor = 1e-4;
  at::Tensor dt = at::exp(at::rand({dim}, gen, at::TensorOptions(at::kDouble)) *
                              (std::log(dt_max) - std::log(dt_min)) +
                          std::log(dt_min))
                      .clamp_min(dt_floor);            // [C]
  dt_proj->bias.copy_(dt + at::log(-at::expm1(-dt)));  // softplus^-1(dt)
  A_log.copy_(at::log(at::arange(1, d_state + 1, at::kFloat)).unsqueeze(0).expand({dim, d_state}));
  D.fill_(1.0);
}

at::Tensor MambaOutSsmImpl::forward(const at::Tensor& u) const {
  const int64_t R = dt_rank, N = d_state;
  at::Tensor xdbl = at::matmul(x_proj->weight, u);                       // [B, R + 2N, L]
  at::Tensor delta = at::matmul(dt_proj->weight, xdbl.narrow(1, 0, R));  // [B, C, L]
  kernels::SelectiveScanArgs a;
  a.u = u;                               // [B, C, L]
  a.delta = delta;                       // [B, C, L]
  a.A = -at::exp(A_log.to(at::kFloat));  // [C, N]
  a.B = xdbl.narrow(1, R, N);            // [B, N, L]
  a.C = xdbl.narrow(1, R + N, N);        // [B, N, L]
  a.D = D;
  a.delta_bias = dt_proj->bias;
  a.delta_softplus = true;
  return kernels::selective_scan(a).y;  // [B, C, L]
}

GatedCnnBlockImpl::GatedCnnBlockImpl(int64_t dim_, double drop_path_, const MambaOutConfig& c)
    : dim(dim_), hidden(MambaOutConfig::hidden_dim(dim_)), drop_path(drop_path_) {
  norm = register_module("norm", std::make_shared<LayerNormImpl>(dim, MambaOutConfig::kNormEps));
  fc1 = register_module("fc1", Linear(dim, 2 * hidden));
  const int64_t k = MambaOutConfig::kKernel;
  conv = register_module("conv", std::make_shared<Conv2dImpl>(dim, dim, k, 1, k / 2, dim));
  fc2 = register_module("fc2", Linear(hidden, dim));
  if (c.ssm) {
    ssm = register_module("ssm", std::make_shared<MambaOutSsmImpl>(dim, c.ssm_cfg));
    if (c.ssm_cfg.bidirectional)
      ssm_rev = register_module("ssm_rev", std::make_shared<MambaOutSsmImpl>(dim, c.ssm_cfg));
  }
}

at::Tensor GatedCnnBlockImpl::forward(const at::Tensor& x) {
  const int64_t C = dim, h = hidden;
  at::Tensor y = fc1->forward(norm->forward(x));                    // [B, H, W, 2h]
  at::Tensor g = y.narrow(-1, 0, h);                                // [B, H, W, h]
  at::Tensor i = y.narrow(-1, h, h - C);                            // [B, H, W, h - C]
  at::Tensor c = y.narrow(-1, 2 * h - C, C).permute({0, 3, 1, 2});  // [B, C, H, W]
  c = conv->forward(c);                                             // [B, C, H, W]
  if (ssm) {
    const int64_t B = c.size(0), H = c.size(2), W = c.size(3);
    at::Tensor u = at::silu(c).reshape({B, C, H * W}).contiguous();  // [B, C, L] row-major
    at::Tensor s = ssm->forward(u);                                  // [B, C, L]
    if (ssm_rev) s = s + ssm_rev->forward(u.flip({-1})).flip({-1});
    c = s.view({B, C, H, W});
  }
  c = c.permute({0, 2, 3, 1});                                       // [B, H, W, C]
  at::Tensor out = fc2->forward(at::gelu(g) * at::cat({i, c}, -1));  // [B, H, W, C]
  if (is_training() && drop_path > 0.0) {
    // timm's DropPath: one Bernoulli(keep) per sample, scaled by 1 / keep.
    const double keep = 1.0 - drop_path;
    at::Tensor mask = at::empty({x.size(0), 1, 1, 1}, out.options().requires_grad(false));
    mask.bernoulli_(keep).div_(keep);  // [B, 1, 1, 1]
    out = out * mask;
  }
  return out + x;
}

// ---------------------------------------------------------------------------------------------
// Network

MambaOutImpl::MambaOutImpl(const MambaOutConfig& c, bool initialize)
    : torch::nn::Module("MambaOut"), cfg(c) {
  cfg.validate("MambaOut config");
  const auto& dims = cfg.dims;
  const double eps = MambaOutConfig::kNormEps;
  const int64_t S = static_cast<int64_t>(dims.size());

  torch::nn::ModuleList ds;
  stem = std::make_shared<Stem>();
  stem->conv1 =
      stem->register_module("conv1", std::make_shared<Conv2dImpl>(3, dims[0] / 2, 3, 2, 1));
  stem->norm1 = stem->register_module("norm1", std::make_shared<LayerNormImpl>(dims[0] / 2, eps));
  stem->conv2 =
      stem->register_module("conv2", std::make_shared<Conv2dImpl>(dims[0] / 2, dims[0], 3, 2, 1));
  stem->norm2 = stem->register_module("norm2", std::make_shared<LayerNormImpl>(dims[0], eps));
  ds->push_back(std::static_pointer_cast<torch::nn::Module>(stem));
  downsample.push_back(nullptr);
  for (int64_t s = 1; s < S; ++s) {
    auto d = std::make_shared<Downsample>();
    d->conv =
        d->register_module("conv", std::make_shared<Conv2dImpl>(dims[s - 1], dims[s], 3, 2, 1));
    d->norm = d->register_module("norm", std::make_shared<LayerNormImpl>(dims[s], eps));
    ds->push_back(std::static_pointer_cast<torch::nn::Module>(d));
    downsample.push_back(d);
  }
  register_module("downsample_layers", ds);

  // Stochastic depth: linspace(0, rate, total blocks) in float32, as the official code.
  at::Tensor dpr = at::linspace(0.0, cfg.drop_path_rate, cfg.total_blocks(), at::kFloat);
  torch::nn::ModuleList stages;
  int64_t k = 0;
  for (int64_t s = 0; s < S; ++s) {
    torch::nn::ModuleList stage;
    blocks.emplace_back();
    for (int64_t b = 0; b < cfg.depths[s]; ++b, ++k) {
      auto blk = std::make_shared<GatedCnnBlockImpl>(dims[s], dpr[k].item<double>(), cfg);
      stage->push_back(std::static_pointer_cast<torch::nn::Module>(blk));
      blocks.back().push_back(blk);
    }
    stages->push_back(stage);
  }
  register_module("stages", stages);

  const int64_t C = dims.back(), Hd = MambaOutConfig::kHeadRatio * C;
  norm = register_module("norm", std::make_shared<LayerNormImpl>(C, eps));
  head = std::make_shared<Head>();
  head->fc1 = head->register_module("fc1", Linear(C, Hd));
  head->norm = head->register_module("norm", std::make_shared<LayerNormImpl>(Hd, eps));
  if (cfg.num_classes > 0) head->fc2 = head->register_module("fc2", Linear(Hd, cfg.num_classes));
  register_module("head", std::static_pointer_cast<torch::nn::Module>(head));
  if (initialize) init_weights(0);
}

void MambaOutImpl::init_weights(uint64_t seed) {
  // A private generator: seeding the process-wide one would reset every later random draw of the
  // program (data shuffling, dropout, ...) whenever a model is built or loaded.
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  at::NoGradGuard ng;
  // include_self false: the root is no Conv / Linear / LayerNorm, and a MambaOutImpl built on the
  // stack (not in a shared_ptr) cannot hand itself out.
  for (const auto& item : named_modules(/*name_prefix=*/"", /*include_self=*/false)) {
    if (item.key().find("ssm") != std::string::npos) continue;  // SSM cores: below
    torch::nn::Module& m = *item.value();
    if (auto* conv = m.as<Conv2dImpl>()) {
      trunc_normal_(conv->weight, 0.02, gen);
      conv->bias.zero_();
    } else if (auto* lin = m.as<LinearImpl>()) {
      trunc_normal_(lin->weight, 0.02, gen);
      if (lin->bias.defined()) lin->bias.zero_();
    } else if (auto* ln = m.as<LayerNormImpl>()) {
      ln->weight.fill_(1.0);
      ln->bias.zero_();
    }
  }
  for (auto& stage : blocks)
    for (auto& b : stage) {
      if (b->ssm) b->ssm->init_weights(gen);
      if (b->ssm_rev) b->ssm_rev->init_weights(gen);
    }
}

at::Tensor MambaOutImpl::forward_features(const at::Tensor& images) {
  MVL_CHECK(images.defined() && images.dim() == 4 && images.size(1) == 3 && images.size(2) > 0 &&
                images.size(3) > 0,
            "MambaOut: images must be [B, 3, H, W], got ",
            images.defined() ? shape_str(images.sizes()) : std::string("undefined"));
  MVL_CHECK(at::isFloatingType(images.scalar_type()),
            "MambaOut: images must be floating point, got ", c10::toString(images.scalar_type()));
  const at::Tensor& w = stem->conv1->weight;
  at::Tensor x = images.to(w.device(), w.scalar_type());                    // [B, 3, H, W]
  x = stem->conv1->forward(x);                                              // [B, C0/2, H/2, W/2]
  x = stem->norm1->forward(x.permute({0, 2, 3, 1})).permute({0, 3, 1, 2});  // same
  x = at::gelu(x);
  x = stem->conv2->forward(x);                        // [B, C0, H/4, W/4]
  x = stem->norm2->forward(x.permute({0, 2, 3, 1}));  // [B, H/4, W/4, C0]
  for (size_t s = 0; s < blocks.size(); ++s) {
    if (s > 0) {
      const auto& d = downsample[s];
      x = d->conv->forward(x.permute({0, 3, 1, 2}));  // [B, Cs, h/2, w/2]
      x = d->norm->forward(x.permute({0, 2, 3, 1}));  // [B, h/2, w/2, Cs]
    }
    for (auto& b : blocks[s]) x = b->forward(x);  // [B, h, w, Cs]
  }
  return x;  // [B, gh, gw, C4]
}

at::Tensor MambaOutImpl::forward_head(const at::Tensor& features) {
  at::Tensor x = norm->forward(features.mean({1, 2}));  // [B, C4]
  x = at::gelu(head->fc1->forward(x));                  // [B, 4 C4]
  x = head->norm->forward(x);                           // [B, 4 C4]
  if (!head->fc2) return x;                             // num_classes 0: pre-logits
  return head->fc2->forward(x);                         // [B, classes]
}

int64_t MambaOutImpl::num_parameters() const {
  int64_t n = 0;
  for (const auto& p : parameters()) n += p.numel();
  return n;
}

std::string MambaOutImpl::timm_key(const std::string& name) {
  const std::string ds = "downsample_layers.";
  if (starts_with(name, ds + "0.")) return "stem." + name.substr(ds.size() + 2);
  if (starts_with(name, ds)) {
    const std::string rest = name.substr(ds.size());  // "{s}.conv.weight"
    const size_t dot = rest.find('.');
    return "stages." + rest.substr(0, dot) + ".downsample" + rest.substr(dot);
  }
  if (starts_with(name, "stages.")) {
    const std::string rest = name.substr(7);  // "{s}.{b}.fc1.weight"
    const size_t dot = rest.find('.');
    return "stages." + rest.substr(0, dot) + ".blocks" + rest.substr(dot);
  }
  if (starts_with(name, "norm.")) return "head.norm." + name.substr(5);
  if (starts_with(name, "head.fc1.")) return "head.pre_logits.fc." + name.substr(9);
  if (starts_with(name, "head.norm.")) return "head.pre_logits.norm." + name.substr(10);
  if (starts_with(name, "head.fc2.")) return "head.fc." + name.substr(9);
  return name;
}

namespace {

// Builds the network for `cfg_json` and loads dir's weights (official or timm keys). With
// `head_optional` (encoders) the final norm and head may be absent (they keep the init).
std::shared_ptr<MambaOutImpl> load_network(const fs::path& dir, const nlohmann::json& cfg_json,
                                           bool head_optional) {
  const std::string file = (dir / "config.json").string();
  MambaOutConfig c = MambaOutConfig::from_json(cfg_json, file);
  io::CheckpointFolder ckpt(dir);
  check_weights_match_config(c.expected_weights(), ckpt, file);  // before building
  const bool timm = ckpt.contains("stem.conv1.weight");
  auto key = [timm](const std::string& n) { return timm ? MambaOutImpl::timm_key(n) : n; };
  auto is_head = [](const std::string& n) {
    return starts_with(n, "head.") || starts_with(n, "norm.");
  };
  bool head_present = true;
  auto m = std::make_shared<MambaOutImpl>(c, /*initialize=*/false);
  for (const auto& p : m->named_parameters())
    if (is_head(p.key()) && !ckpt.contains(key(p.key()))) head_present = false;
  if (head_optional && !head_present) m->init_weights(0);
  io::LoadOptions opt;
  opt.keys_for = [key](const std::string& n) { return std::vector<std::string>{key(n)}; };
  if (head_optional) opt.allow_missing = is_head;
  io::load_module(*m, ckpt, opt);
  return m;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Classifier / encoder

namespace {
void check_has_classifier(const MambaOutConfig& c, const std::string& file) {
  MVL_CHECK(c.num_classes > 0, file, ": num_classes = 0 (no classifier head.fc / head.fc2): ",
            "this MambaOut is an encoder only; load it with load_vision_encoder, or give "
            "num_classes >= 1 for a classifier");
}
}  // namespace

MambaOutClassifier::MambaOutClassifier(const MambaOutConfig& c, bool initialize, uint64_t seed) {
  check_has_classifier(c, "MambaOut config");
  model = std::make_shared<MambaOutImpl>(c, /*initialize=*/false);
  if (initialize) model->init_weights(seed);
}

MambaOutClassifier::MambaOutClassifier(std::shared_ptr<MambaOutImpl> m) : model(std::move(m)) {
  MVL_CHECK(model, "MambaOutClassifier: null network");
  check_has_classifier(model->cfg, "MambaOut config");
}

std::unique_ptr<MambaOutClassifier> MambaOutClassifier::load(const fs::path& dir,
                                                             const nlohmann::json& cfg) {
  const std::string file = (dir / "config.json").string();
  check_has_classifier(MambaOutConfig::from_json(cfg, file), file);  // before reading weights
  return std::make_unique<MambaOutClassifier>(load_network(dir, cfg, /*head_optional=*/false));
}

at::Tensor MambaOutClassifier::forward(const at::Tensor& images) {
  return model->forward(images).to(at::kFloat);  // [B, classes]
}

std::unique_ptr<MambaOutEncoder> MambaOutEncoder::load(const fs::path& dir,
                                                       const nlohmann::json& cfg) {
  return std::make_unique<MambaOutEncoder>(load_network(dir, cfg, /*head_optional=*/true));
}

VisionFeatures MambaOutEncoder::encode(const at::Tensor& images, const FeatureSelect& sel) {
  MVL_CHECK(sel.layer == -1, "MambaOut encoder: only the last stage's feature map (layer -1) is ",
            "available, not layer ", sel.layer);
  MVL_CHECK(!sel.final_norm,
            "MambaOut encoder: final_norm is not available: MambaOut has no final norm over the "
            "feature map (its 'norm', timm's head.norm, normalises the globally average-pooled "
            "vector inside the classifier head); the features are the last stage's output, as "
            "timm's forward_features");
  at::Tensor f = model->forward_features(images);  // [B, gh, gw, C4]
  VisionFeatures out;
  out.grid_h = f.size(1);
  out.grid_w = f.size(2);
  out.num_prefix = 0;
  out.tokens = f.reshape({f.size(0), out.grid_h * out.grid_w, f.size(3)});  // [B, gh*gw, C4]
  return out;
}

void MambaOutEncoder::to_dtype(at::ScalarType dtype) {
  MVL_CHECK(dtype == at::kFloat || dtype == at::kBFloat16,
            "MambaOut encoders run in float32 or bfloat16, not ", c10::toString(dtype));
  at::NoGradGuard ng;
  for (auto& p : model->named_parameters()) {
    const std::string& name = p.key();
    // mambaout_ssm: the SSM cores' A_log and D stay fp32 (SPEC §1.1, as MambaLM::to_dtype).
    const bool keep_fp32 = name.ends_with(".A_log") || name.ends_with(".D");
    const at::ScalarType target = keep_fp32 ? at::kFloat : dtype;
    if (p.value().scalar_type() != target) p.value().set_data(p.value().to(target));
  }
}

void MambaOutEncoder::save(const fs::path& dir) const {
  fs::create_directories(dir);
  io::save_module(*model, dir);
  io::write_json_file(dir / "config.json", model->cfg.to_json());
}

std::unique_ptr<VisionEncoder> make_mambaout_encoder_preset(const std::string& variant,
                                                            uint64_t seed) {
  auto m = std::make_shared<MambaOutImpl>(MambaOutConfig::preset(variant), /*initialize=*/false);
  m->init_weights(seed);
  return std::make_unique<MambaOutEncoder>(m);
}

// ---------------------------------------------------------------------------------------------
// Registry factories (vision_factories.h)

std::unique_ptr<ImageClassifier> make_mambaout_classifier(const nlohmann::json& cfg, uint64_t seed,
                                                          const std::string& file) {
  MambaOutConfig c = MambaOutConfig::from_json(cfg, file);
  check_has_classifier(c, file);
  return std::make_unique<MambaOutClassifier>(c, /*initialize=*/true, seed);
}

std::unique_ptr<ImageClassifier> load_mambaout_classifier(const fs::path& dir,
                                                          const nlohmann::json& cfg) {
  return MambaOutClassifier::load(dir, cfg);
}

std::unique_ptr<VisionEncoder> load_mambaout_encoder(const fs::path& dir,
                                                     const nlohmann::json& cfg) {
  return MambaOutEncoder::load(dir, cfg);
}

std::unique_ptr<VisionEncoder> make_mambaout_encoder(const nlohmann::json& cfg, uint64_t seed,
                                                     bool initialize, const std::string& file) {
  auto m = std::make_shared<MambaOutImpl>(MambaOutConfig::from_json(cfg, file),
                                          /*initialize=*/false);
  if (initialize) m->init_weights(seed);
  return std::make_unique<MambaOutEncoder>(m);
}

}  // namespace mambavl::models
