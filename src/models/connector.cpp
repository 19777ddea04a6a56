// Connectors: config parsing, the VSS module, MLP / VSS-MLP / VSS-L2, save / load.
#include "models/connector.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/options/normalization.h>

#include <cmath>
#include <optional>
#include <set>
#include <utility>

#include "common/error.h"
#include "common/shape.h"
#include "io/checkpoint.h"
#include "kernels/causal_conv1d.h"
#include "kernels/selective_scan.h"
#include "io/config_util.h"
#include "models/bf16_gemm.h"

namespace mambavl::models {

// ---------------------------------------------------------------------------------------------
// Config

namespace {
const std::set<std::string> kKnown = {"type",  "d_vision",      "d_lm",           "scan",
                                      "merge", "share_weights", "layer_norm_eps", "mamba"};
const std::set<std::string> kMambaKnown = {"d_state", "d_conv", "expand"};
}  // namespace

ConnectorConfig ConnectorConfig::from_json(const nlohmann::json& j, const std::string& file) {
  cfg::check_known_keys(j, kKnown, file, "connector config");
  ConnectorConfig c;
  MVL_CHECK(j.contains("type") && !j.at("type").is_null(), file,
            ": required key 'type' is missing (mlp, vss_mlp or vss_l2)");
  c.type = cfg::get_string(j, "type", file, c.type);
  c.d_vision = cfg::require_int(j, "d_vision", file);
  c.d_lm = cfg::require_int(j, "d_lm", file);
  c.scan = cfg::get_string(j, "scan", file, c.scan);
  c.merge = cfg::get_string(j, "merge", file, c.merge);
  c.share_weights = cfg::get_bool(j, "share_weights", file, c.share_weights);
  c.layer_norm_eps = cfg::get_double(j, "layer_norm_eps", file, c.layer_norm_eps);
  if (j.contains("mamba") && !j.at("mamba").is_null()) {
    const auto& m = j.at("mamba");
    cfg::check_known_keys(m, kMambaKnown, file, "'mamba'");
    c.d_state = cfg::get_int(m, "d_state", file, c.d_state);
    c.d_conv = cfg::get_int(m, "d_conv", file, c.d_conv);
    c.expand = cfg::get_int(m, "expand", file, c.expand);
  }
  c.validate(file);
  return c;
}

nlohmann::json ConnectorConfig::to_json() const {
  return {{"type", type},
          {"d_vision", d_vision},
          {"d_lm", d_lm},
          {"scan", scan},
          {"merge", merge},
          {"share_weights", share_weights},
          {"layer_norm_eps", layer_norm_eps},
          {"mamba", {{"d_state", d_state}, {"d_conv", d_conv}, {"expand", expand}}}};
}

void ConnectorConfig::validate(const std::string& file) const {
  MVL_CHECK(type == "mlp" || type == "vss_mlp" || type == "vss_l2", file,
            ": key 'type' must be mlp, vss_mlp or vss_l2, got '", type, "'");
  MVL_CHECK(d_vision > 0 && d_vision <= kMaxWidth, file, ": key 'd_vision' must be in [1, ",
            kMaxWidth, "], got ", d_vision);
  MVL_CHECK(d_lm > 0 && d_lm <= kMaxWidth, file, ": key 'd_lm' must be in [1, ", kMaxWidth,
            "], got ", d_lm);
  MVL_CHECK(scan == "bsm" || scan == "csm", file, ": key 'scan' must be bsm or csm, got '", scan,
            "'");
  MVL_CHECK(merge == "sum" || merge == "mean", file, ": key 'merge' must be sum or mean, got '",
            merge, "'");
  MVL_CHECK(layer_norm_eps > 0, file, ": key 'layer_norm_eps' must be > 0, got ", layer_norm_eps);
  MVL_CHECK(d_state > 0 && d_state <= kMaxDState, file, ": key 'mamba.d_state' must be in [1, ",
            kMaxDState, "], got ", d_state);
  MVL_CHECK(d_conv > 0 && d_conv <= kMaxDConv, file, ": key 'mamba.d_conv' must be in [1, ",
            kMaxDConv, "], got ", d_conv);
  MVL_CHECK(expand > 0 && expand <= kMaxExpand, file, ": key 'mamba.expand' must be in [1, ",
            kMaxExpand, "], got ", expand);
  const double n = num_parameters();
  MVL_CHECK(n <= kMaxParameters, file, ": this connector has ", n, " parameters (d_vision ",
            d_vision, ", d_lm ", d_lm, "); at most ", kMaxParameters, " are supported");
}

double ConnectorConfig::num_parameters() const {
  const double dv = static_cast<double>(d_vision), dl = static_cast<double>(d_lm);
  double n = (dv * dl + dl) + (dl * dl + dl);  // linear_1, linear_2
  if (!has_vss()) return n;
  // The mixer (MambaMixerImpl, no in/out bias, conv bias): sizes derived as mixer_config() does.
  const double d = static_cast<double>(vss_width()), Di = static_cast<double>(expand) * d;
  const double R = std::ceil(d / 16.0), N = static_cast<double>(d_state);
  const double W = static_cast<double>(d_conv);
  const double mixer =
      d * 2 * Di + (Di * W + Di) + Di * (R + 2 * N) + (R * Di + Di) + Di * N + Di + Di * d;
  const double mixers =
      share_weights ? 1.0 : static_cast<double>(kernels::scan_orders(scan).size());
  return n + 2 * d + mixers * mixer;  // + norm
}

ExpectedWeights ConnectorConfig::expected_weights(const std::string& fields) const {
  const std::string dv = fields + "d_vision", dl = fields + "d_lm";
  ExpectedWeights w;
  w.num_parameters = num_parameters();
  w.tensor({"linear_1.weight"}, {dim(d_lm, dl), dim(d_vision, dv)});
  w.tensor({"linear_2.weight"}, {dim(d_lm, dl), dim(d_lm, dl)});
  if (has_vss()) {
    const int64_t d = vss_width();
    const std::string W = type == "vss_mlp" ? dv : dl, E = fields + "mamba.expand";
    w.tensor({"vss.mixer.in_proj.weight", "vss.mixers.0.in_proj.weight"},
             {dim(2 * expand * d, E, "2 × " + E + " × " + W), dim(d, W)});
  }
  return w;
}

MambaConfig ConnectorConfig::mixer_config() const {
  MambaConfig m;
  m.d_model = vss_width();
  m.n_layer = 1;
  m.d_state = d_state;
  m.d_conv = d_conv;
  m.expand = expand;
  m.d_inner = 0;  // derived: expand * d_model
  m.dt_rank = 0;  // derived: ceil(d_model / 16)
  m.finalize();
  return m;
}

// ---------------------------------------------------------------------------------------------
// VSS

VssImpl::VssImpl(const MambaConfig& mixer_cfg, std::vector<kernels::ScanOrder> orders_,
                 kernels::ScanMerge merge_, bool share_weights, bool initialize)
    : orders(std::move(orders_)), merge(merge_) {
  MVL_CHECK(!orders.empty(), "VSS module: no scan orders");
  if (share_weights) {
    mixer = register_module("mixer", std::make_shared<MambaMixerImpl>(mixer_cfg, initialize));
  } else {
    torch::nn::ModuleList list;
    for (size_t k = 0; k < orders.size(); ++k) {
      mixers.push_back(std::make_shared<MambaMixerImpl>(mixer_cfg, initialize));
      list->push_back(mixers.back());
    }
    register_module("mixers", list);
  }
}

std::vector<std::shared_ptr<MambaMixerImpl>> VssImpl::all_mixers() const {
  if (mixer) return {mixer};
  return mixers;
}

namespace {

// PyTorch's nn.Linear default (LinearImpl::reset_parameters), drawing from `gen`.
void reset_linear(LinearImpl& l, const at::Generator& gen) {
  const double bound =
      l.in_features > 0 ? 1.0 / std::sqrt(static_cast<double>(l.in_features)) : 0.0;
  l.weight.uniform_(-bound, bound, gen);
  if (l.bias.defined()) l.bias.uniform_(-bound, bound, gen);
}

// MambaMixerImpl::init_weights() (with reset_ssm_parameters' defaults dt in [1e-3, 0.1], floor
// 1e-4), drawing from `gen`: the same draws in the same order, so that it gives the same values as
// that function after at::manual_seed (Connector.InitMatchesTheMixersOwnInit checks it).
void init_mixer(MambaMixerImpl& m, const at::Generator& gen) {
  at::NoGradGuard ng;
  for (auto* lin : {&m.in_proj, &m.x_proj, &m.out_proj}) {
    reset_linear(**lin, gen);
    if ((*lin)->bias.defined()) (*lin)->bias.zero_();
  }
  const double bound = 1.0 / std::sqrt(static_cast<double>(m.cfg.d_conv));
  m.conv_weight.uniform_(-bound, bound, gen);
  if (m.conv_bias.defined()) m.conv_bias.uniform_(-bound, bound, gen);
  const int64_t Di = m.cfg.d_inner, N = m.cfg.d_state;
  const double std = std::pow(static_cast<double>(m.cfg.dt_rank), -0.5);
  m.dt_proj->weight.uniform_(-std, std, gen);
  const double dt_min = 1e-3, dt_max = 0.1, dt_floor = 1e-4;
  at::Tensor dt = at::exp(at::rand({Di}, gen, at::TensorOptions(at::kDouble)) *
                              (std::log(dt_max) - std::log(dt_min)) +
                          std::log(dt_min))
                      .clamp_min(dt_floor);                 // [Di]
  at::Tensor inv_softplus = dt + at::log(-at::expm1(-dt));  // [Di]
  m.dt_proj->bias.copy_(inv_softplus);
  m.A_log.copy_(at::log(at::arange(1, N + 1, at::kFloat)).unsqueeze(0).expand({Di, N}));
  m.D.fill_(1.0);
}

}  // namespace

void VssImpl::init_weights(const at::Generator& gen) {
  for (auto& m : all_mixers()) init_mixer(*m, gen);
}

at::Tensor VssImpl::forward(const at::Tensor& x, int64_t gh, int64_t gw) {
  const int64_t width = all_mixers().front()->cfg.d_model;
  MVL_CHECK(x.defined() && x.dim() == 3 && x.size(2) == width, "VSS module: x must be [B, gh*gw, ",
            width, "], got ", x.defined() ? shape_str(x.sizes()) : std::string("undefined"));
  if (mixer && hoist_projections) return forward_hoisted(x, gh, gw);
  const int64_t Bn = x.size(0), L = x.size(1), d = x.size(2);
  const int64_t K = static_cast<int64_t>(orders.size());
  // The only copies besides the mixer's own: the gather into the K orders and the merge.
  at::Tensor xs = kernels::scan2d_gather(x, gh, gw, orders, scan_backend);  // [B, K, L, d]
  at::Tensor ys;                                                            // [B, K, L, d]
  if (mixer) {
    // One mixer call for all orders: [B*K, L, d] is a view of the gathered block.
    ys = mixer->mix(xs.view({Bn * K, L, d}), nullptr, 0).reshape({Bn, K, L, d});
  } else {
    std::vector<at::Tensor> outs;
    outs.reserve(static_cast<size_t>(K));
    for (int64_t k = 0; k < K; ++k) outs.push_back(mixers[k]->mix(xs.select(1, k), nullptr, 0));
    ys = at::stack(outs, 1);  // [B, K, L, d]
  }
  return kernels::scan2d_scatter(ys, gh, gw, orders, merge, scan_backend);  // [B, L, d]
}

at::Tensor VssImpl::forward_hoisted(const at::Tensor& x, int64_t gh, int64_t gw) {
  MVL_CHECK(mixer, "VSS module: the hoisted path needs a shared mixer");
  const MambaMixerImpl& m = *mixer;
  const int64_t Bn = x.size(0), L = x.size(1), K = static_cast<int64_t>(orders.size());
  const int64_t Di = m.cfg.d_inner, N = m.cfg.d_state, R = m.cfg.dt_rank, W = m.cfg.d_conv;
  // Same steps as MambaMixerImpl's sequence forward (SPEC §1.1), channel-first for the kernels.
  at::Tensor xz = m.in_proj->forward(x);                                          // [B, L, 2*Di]
  at::Tensor xzs = kernels::scan2d_gather(xz, gh, gw, orders, scan_backend);      // [B, K, L, 2*Di]
  at::Tensor xz_cf = xzs.view({Bn * K, L, 2 * Di}).transpose(1, 2).contiguous();  // [BK, 2Di, L]
  at::Tensor xin = xz_cf.narrow(1, 0, Di);                                        // [BK, Di, L]
  at::Tensor z = xz_cf.narrow(1, Di, Di);                                         // [BK, Di, L]
  std::optional<at::Tensor> cb;
  if (m.conv_bias.defined()) cb = m.conv_bias;
  at::Tensor xc = kernels::causal_conv1d(xin, m.conv_weight.view({Di, W}), cb, /*silu=*/true,
                                         m.backend);                       // [BK, Di, L]
  at::Tensor xdbl = at::matmul(m.x_proj->weight, xc);                      // [BK, R + 2N, L]
  at::Tensor delta = at::matmul(m.dt_proj->weight, xdbl.narrow(1, 0, R));  // [BK, Di, L]
  kernels::SelectiveScanArgs a;
  a.u = xc;
  a.delta = delta;
  a.A = -at::exp(m.A_log.to(at::kFloat));  // [Di, N]
  a.B = xdbl.narrow(1, R, N);              // [BK, N, L]
  a.C = xdbl.narrow(1, R + N, N);          // [BK, N, L]
  a.D = m.D;
  a.z = z;
  a.delta_bias = m.dt_proj->bias;
  a.delta_softplus = true;
  at::Tensor y = kernels::selective_scan(a, m.backend).y;               // [BK, Di, L]
  at::Tensor ys = y.transpose(1, 2).contiguous().view({Bn, K, L, Di});  // [B, K, L, Di]
  at::Tensor merged =
      kernels::scan2d_scatter(ys, gh, gw, orders, merge, scan_backend);  // [B, L, Di]
  // out_proj(merge_k y_k) = merge_k out_proj(y_k), except that a bias is added once per order.
  at::Tensor out = weight_linear(merged, m.out_proj->weight, {});  // [B, L, d]
  if (m.out_proj->bias.defined())
    out =
        out + (merge == kernels::ScanMerge::Sum ? static_cast<double>(K) : 1.0) * m.out_proj->bias;
  return out;
}

// ---------------------------------------------------------------------------------------------
// Connector

ConnectorImpl::ConnectorImpl(const ConnectorConfig& c, uint64_t seed, bool initialize) : cfg_(c) {
  cfg_.validate();
  linear_1 = register_module("linear_1", Linear(cfg_.d_vision, cfg_.d_lm));
  if (cfg_.has_vss()) {
    vss = register_module(
        "vss", std::make_shared<VssImpl>(cfg_.mixer_config(), cfg_.orders(),
                                         kernels::parse_scan_merge(cfg_.merge), cfg_.share_weights,
                                         /*initialize=*/false));
    norm = register_module(
        "norm", torch::nn::LayerNorm(
                    torch::nn::LayerNormOptions({cfg_.vss_width()}).eps(cfg_.layer_norm_eps)));
  }
  linear_2 = register_module("linear_2", Linear(cfg_.d_lm, cfg_.d_lm));
  if (initialize) init_weights(seed);
}

void ConnectorImpl::init_weights(uint64_t seed) {
  // A private generator: the process-wide one (data order, dropout, ...) is left untouched.
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  at::NoGradGuard ng;
  reset_linear(*linear_1, gen);
  if (vss) vss->init_weights(gen);
  if (norm) norm->reset_parameters();  // 1 / 0, no random draw
  reset_linear(*linear_2, gen);
}

at::Tensor ConnectorImpl::forward(const at::Tensor& v, int64_t gh, int64_t gw) {
  MVL_CHECK(v.defined() && v.dim() == 3, "connector: features must be [B, gh*gw, d_vision], got ",
            v.defined() ? shape_str(v.sizes()) : std::string("undefined"));
  MVL_CHECK(gh >= 1 && gw >= 1, "connector: grid must be at least 1x1, got ", gh, "x", gw);
  MVL_CHECK(v.size(1) == gh * gw, "connector: features have ", v.size(1), " tokens (",
            shape_str(v.sizes()), ") but the grid is ", gh, "x", gw, " = ", gh * gw);
  MVL_CHECK(v.size(2) == cfg_.d_vision, "connector: features have width ", v.size(2), " (",
            shape_str(v.sizes()), ") but d_vision is ", cfg_.d_vision);
  if (cfg_.type == "mlp") return linear_2->forward(at::gelu(linear_1->forward(v)));  // [B, L, d_lm]
  if (cfg_.type == "vss_mlp") {
    at::Tensor h = norm->forward(vss->forward(v, gh, gw) + v);  // [B, L, d_vision]
    return linear_2->forward(at::gelu(linear_1->forward(h)));   // [B, L, d_lm]
  }
  // vss_l2
  at::Tensor v1 = linear_1->forward(v);                                   // [B, L, d_lm]
  at::Tensor h = norm->forward(vss->forward(at::gelu(v1), gh, gw) + v1);  // [B, L, d_lm]
  return linear_2->forward(h);                                            // [B, L, d_lm]
}

void save_connector(const ConnectorImpl& c, const std::filesystem::path& dir) {
  io::save_module(c, dir);
  io::write_json_file(dir / "config.json", c.config().to_json());
}

std::shared_ptr<ConnectorImpl> load_connector(const std::filesystem::path& dir) {
  const auto file = dir / "config.json";
  auto cfg = ConnectorConfig::from_json(io::read_json_file(file), file.string());
  io::CheckpointFolder ckpt(dir);
  check_weights_match_config(cfg.expected_weights(), ckpt, file.string());  // before building
  auto c = std::make_shared<ConnectorImpl>(cfg, 0, /*initialize=*/false);
  io::load_module(*c, ckpt);
  return c;
}

}  // namespace mambavl::models
