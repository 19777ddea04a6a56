// `mambavl bench vlm`: for each VLM of the given pairs (random weights, one model alive at a time):
//   image-to-first-token latency = encoder (preprocessed image -> features) + connector + prefill
//   (embedding lookup, image tokens written in, the LM over the image block and a VQA prompt, the
//   head at the last position, argmax = the first token), then batch-1 greedy decode tokens/s over
//   --decode-tokens steps with the prefill's cache (as generate::generate steps).
// Bounds measured in the same run: decode <= read bandwidth / weight bytes read per token (every
// LM weight, except the input embedding matrix when the head is a separate matrix: the lookup
// reads one row); prefill <= fp32 GEMM rate / (2 x LM matmul weights per token).
//
// No tokenizer is needed: the sequence is Shaking-Up's default order with the GPT-NeoX ids of
// "###" (4118), "&&" (10494), the VQA instruction "Answer the question using a single word or
// phrase." and the query "\nQuestion: what colour is the small circle?\nAnswer: " (ids computed
// with `mambavl tokenize` and the gpt-neox-20b tokenizer.json). For a smaller vocabulary (tiny
// presets) every id is taken modulo the vocabulary (same lengths, arbitrary tokens).
#include "bench_vlm.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "cli/cli_common.h"
#include "common/error.h"
#include "data/vl_sequence.h"
#include "models/vlm.h"
#include "common/sysinfo.h"

namespace mambavl::bench {
using namespace ::mambavl::sys;

namespace {

using clock = std::chrono::steady_clock;
double secs(clock::time_point a, clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// GPT-NeoX ids (see the file comment).
constexpr int64_t kNeoxImageStart = 4118;  // "###"
constexpr int64_t kNeoxRowEnd = 10494;     // "&&"
const std::vector<int64_t>& neox_vqa_prompt() {
  static const std::vector<int64_t> ids = {
      // "Answer the question using a single word or phrase."
      32869, 253, 1953, 970, 247, 2014, 3159, 390, 12616, 15,
      // "\nQuestion: what colour is the small circle?\nAnswer: "
      187, 23433, 27, 752, 10688, 310, 253, 1355, 9096, 32, 187, 32869, 27, 209};
  return ids;
}

struct VlmBenchOptions {
  cli::RuntimeOptions rt;
  std::vector<std::string> pairs{"mamba-vl-790m:pythia-vl-1b"};
  bool small = false;      // pairs = mamba-vl-tiny:pythia-vl-tiny, vocab 1104
  int64_t image_size = 0;  // 0: the preset's
  int64_t decode_tokens = 32;
  int64_t vocab = 50277;
  double bandwidth_gbs = 0;  // 0 = measure now
  int bound_repeats = 10;    // GEMM / bandwidth measurements, best of, before and after
};

struct Result {
  std::string name;
  double params_m = 0;
  int64_t image = 0, image_tokens = 0, seq = 0;
  double enc_s = 0, conn_s = 0, prefill_s = 0, decode_s_per_tok = 0;
  double weight_bytes_per_tok = 0, lm_matmul_params = 0;
  double peak_mb = 0;
};

// The sequence ids: image block (placeholders at `pos`) then the VQA prompt, all < vocab.
std::vector<int64_t> build_ids(const models::VLM& vlm, int64_t grid_h, int64_t grid_w,
                               int64_t prefix, int64_t vocab, std::vector<int64_t>& pos) {
  auto v = [vocab](int64_t id) { return id % vocab; };
  std::vector<int64_t> ids;
  const bool sep = vlm.config().image_block == "separator";
  const int64_t placeholder = 0;
  if (sep) ids.push_back(v(kNeoxImageStart));
  for (int64_t i = 0; i < prefix; ++i) {
    pos.push_back(static_cast<int64_t>(ids.size()));
    ids.push_back(placeholder);
  }
  for (int64_t r = 0; r < grid_h; ++r) {
    for (int64_t c = 0; c < grid_w; ++c) {
      pos.push_back(static_cast<int64_t>(ids.size()));
      ids.push_back(placeholder);
    }
    if (sep) ids.push_back(v(r + 1 < grid_h ? kNeoxRowEnd : kNeoxImageStart));
  }
  for (int64_t id : neox_vqa_prompt()) ids.push_back(v(id));
  return ids;
}

Result bench_one(const std::string& name, const VlmBenchOptions& o, int64_t vocab) {
  Result r;
  r.name = name;
  reset_peak_rss();
  models::VLMConfig cfg = models::vlm_preset(name, vocab);
  if (o.image_size > 0) cfg.image_size = o.image_size;
  models::VLM vlm(cfg, /*seed=*/0);
  const at::ScalarType dt = o.rt.dtype == "bf16" ? at::kBFloat16 : at::kFloat;
  if (dt != at::kFloat) vlm.to_dtype(dt);
  r.params_m = static_cast<double>(vlm.num_parameters()) / 1e6;
  auto& lm = vlm.lm();
  const int64_t V = lm.vocab_size();
  {  // bytes read per decode token and matmul weights per prefill token
    int64_t vocab_mats = 0, vocab_bytes = 0, bytes = 0, matmul = 0;
    for (const auto& p : lm.module().parameters()) {
      bytes += p.numel() * p.element_size();
      const bool vocab_matrix = p.dim() == 2 && p.size(0) == V;
      if (vocab_matrix) {
        ++vocab_mats;
        vocab_bytes = p.numel() * p.element_size();
      } else if (p.dim() >= 2) {
        matmul += p.numel();
      }
    }
    // A separate head: the input embedding is a lookup (one row), not read whole.
    r.weight_bytes_per_tok = static_cast<double>(bytes - (vocab_mats >= 2 ? vocab_bytes : 0));
    r.lm_matmul_params = static_cast<double>(matmul);
  }

  const io::ImagePreprocess pp = vlm.preprocess();
  r.image = pp.size;
  const models::FeatureSelect sel = vlm.feature_select();
  auto& enc = vlm.vision();
  auto& conn = vlm.connector();
  at::ScalarType vdt = at::kFloat, cdt = at::kFloat;
  for (const auto& p : enc.module().parameters())
    if (p.dim() > 1) {
      vdt = p.scalar_type();
      break;
    }
  for (const auto& p : conn.parameters())
    if (p.dim() > 1) {
      cdt = p.scalar_type();
      break;
    }
  c10::InferenceMode guard;
  // encoder -> connector, as VLM::encode_images does, timed separately.
  auto encode = [&](const at::Tensor& img, double* enc_s, double* conn_s) {
    const auto t0 = clock::now();
    models::VisionFeatures f = enc.encode(img.to(vdt), sel);
    const auto t1 = clock::now();
    const at::Tensor tok = f.tokens.to(cdt);
    at::Tensor out = f.num_prefix == 0 ? conn.forward(tok, f.grid_h, f.grid_w)
                                       : conn.forward(tok, 1, tok.size(1));
    out = out.to(lm.dtype());  // [1, T, hidden]
    const auto t2 = clock::now();
    if (enc_s) *enc_s = secs(t0, t1);
    if (conn_s) *conn_s = secs(t1, t2);
    return std::make_pair(out, f);
  };
  {  // warm-up (thread pool, oneDNN / BLAS init): the encoder + connector on an image of the
     // timed size (kernels are set up per shape), a short prefill and one decode step
    at::manual_seed(3);
    encode(at::randn({1, 3, r.image, r.image}), nullptr, nullptr);
    auto cache = lm.make_cache(1, 9);
    lm.forward(at::zeros({1, 8}, at::kLong), cache.get(), true);
    lm.forward(at::zeros({1, 1}, at::kLong), cache.get(), true);
  }

  at::manual_seed(1);
  const at::Tensor image = at::randn({1, 3, r.image, r.image});  // a preprocessed image
  auto [feats, f] = encode(image, &r.enc_s, &r.conn_s);
  r.image_tokens = feats.size(1);
  std::vector<int64_t> pos;
  const std::vector<int64_t> ids =
      build_ids(vlm, f.grid_h, f.grid_w, f.num_prefix, std::min(V, vocab), pos);
  MVL_CHECK(static_cast<int64_t>(pos.size()) == r.image_tokens, "bench vlm: ", name, ": ",
            pos.size(), " placeholders for ", r.image_tokens, " image tokens");
  r.seq = static_cast<int64_t>(ids.size());

  auto cache = lm.make_cache(1, r.seq + o.decode_tokens + 1);
  const auto t0 = clock::now();
  at::Tensor x = lm.embed(at::tensor(ids, at::kLong).view({1, -1}));  // [1, L, H]
  const int64_t H = x.size(2);
  x = x.reshape({-1, H})
          .index_put({at::tensor(pos, at::kLong)}, feats.reshape({-1, H}).to(x.dtype()))
          .view({1, -1, H});
  at::Tensor logits = lm.forward_embeds(x, cache.get(), /*last_only=*/true);  // [1, 1, V]
  at::Tensor step = at::zeros({1, 1}, at::kLong);
  step.fill_(logits.view({-1}).argmax().item<int64_t>());  // the first token
  const auto t1 = clock::now();
  r.prefill_s = secs(t0, t1);
  for (int64_t s = 0; s < o.decode_tokens; ++s) {
    logits = lm.forward(step, cache.get(), true);
    step.fill_(logits.view({-1}).argmax().item<int64_t>());
  }
  const auto t2 = clock::now();
  r.decode_s_per_tok = secs(t1, t2) / static_cast<double>(o.decode_tokens);
  r.peak_mb = static_cast<double>(peak_rss_bytes()) / 1e6;
  return r;
}

void run(const VlmBenchOptions& o) {
  cli::apply_runtime_options(o.rt);
  std::vector<std::string> pairs = o.pairs;
  int64_t vocab = o.vocab;
  if (o.small) {
    pairs = {"mamba-vl-tiny:pythia-vl-tiny"};
    vocab = 1104;
  }
  std::vector<std::string> names;
  for (const auto& p : pairs) {
    const auto c = p.find(':');
    MVL_CHECK(c != std::string::npos && c > 0 && c + 1 < p.size() &&
                  p.find(':', c + 1) == std::string::npos,
              "bench vlm --pairs: '", p, "' is not A:B (e.g. mamba-vl-790m:pythia-vl-1b)");
    for (const std::string n : {p.substr(0, c), p.substr(c + 1)}) {
      MVL_CHECK(models::is_vlm_preset(n), "bench vlm --pairs: unknown VLM preset '", n,
                "' (known: ", join(models::vlm_preset_names()), ")");
      names.push_back(n);
    }
  }
  std::printf("bench vlm: %s, dtype %s, load average %s\n", machine_summary().c_str(),
              o.rt.dtype.c_str(), load_average().c_str());
  // Bounds: the best of several runs before and again after the models (other processes on a
  // shared machine lower single measurements; the best is closest to what the machine can do).
  const double bw_before = o.bandwidth_gbs > 0
                               ? o.bandwidth_gbs
                               : measure_read_bandwidth_gbs(512ll << 20, o.bound_repeats);
  const double gemm_before = measure_gemm_gflops(1024, 768, 3072, o.bound_repeats);
  std::printf(
      "batch 1, random weights, vocab %lld; sequence = image block + VQA prompt (%zu text "
      "tokens%s); first token = encoder + connector + prefill (embed, LM, head, argmax); then "
      "%lld greedy decode steps\n",
      static_cast<long long>(vocab), neox_vqa_prompt().size(),
      vocab >= 50277 ? ", GPT-NeoX ids" : ", NeoX ids modulo the vocab",
      static_cast<long long>(o.decode_tokens));
  std::printf(
      "bounds: decode <= bandwidth / LM weight bytes per token (%% BW); prefill <= GEMM rate / "
      "(2 x LM matmul weights) per token (%% GEMM)\n");
  std::fflush(stdout);  // before the progress lines on stderr
  std::vector<Result> rows;
  for (const auto& n : names) {
    rows.push_back(bench_one(n, o, vocab));  // the model is freed before the next is built
    const Result& r = rows.back();
    std::fprintf(stderr, "bench vlm: %s done (peak %.0f MB)\n", n.c_str(), r.peak_mb);
  }
  const double bw_after = o.bandwidth_gbs > 0
                              ? o.bandwidth_gbs
                              : measure_read_bandwidth_gbs(512ll << 20, o.bound_repeats);
  const double gemm_after = measure_gemm_gflops(1024, 768, 3072, o.bound_repeats);
  const double bw = std::max(bw_before, bw_after), gemm = std::max(gemm_before, gemm_after);
  std::printf(
      "measured now: read bandwidth %.1f GB/s before the models, %.1f after%s; fp32 GEMM "
      "(1024x768x3072, best of %d) %.1f GFLOP/s before, %.1f after; bounds use the larger; load "
      "average now %s\n",
      bw_before, bw_after, o.bandwidth_gbs > 0 ? " (given by --bandwidth)" : "", o.bound_repeats,
      gemm_before, gemm_after, load_average().c_str());
  std::printf("%-15s %8s %5s %6s %5s %8s %8s %9s %9s %8s %7s %9s %6s %8s\n", "model", "params M",
              "image", "img tk", "seq", "enc ms", "conn ms", "prefill", "1st tok", "% GEMM",
              "dec t/s", "bound t/s", "% BW", "peak MB");
  for (const auto& r : rows) {
    const double first = r.enc_s + r.conn_s + r.prefill_s;
    const double prefill_gflops =
        2.0 * r.lm_matmul_params * static_cast<double>(r.seq) / r.prefill_s / 1e9;
    const double bound_tps = bw * 1e9 / r.weight_bytes_per_tok;
    const double tps = 1.0 / r.decode_s_per_tok;
    std::printf(
        "%-15s %8.1f %5lld %6lld %5lld %8.1f %8.1f %9.1f %9.1f %7.0f%% %7.2f %9.2f %5.0f%% %8.0f\n",
        r.name.c_str(), r.params_m, static_cast<long long>(r.image),
        static_cast<long long>(r.image_tokens), static_cast<long long>(r.seq), r.enc_s * 1e3,
        r.conn_s * 1e3, r.prefill_s * 1e3, first * 1e3, 100.0 * prefill_gflops / gemm, tps,
        bound_tps, 100.0 * tps / bound_tps, r.peak_mb);
  }
  std::printf(
      "(prefill and 1st tok in ms; %% GEMM is the prefill's; LM weight MB read per decode "
      "token:");
  for (const auto& r : rows) std::printf(" %s %.0f", r.name.c_str(), r.weight_bytes_per_tok / 1e6);
  std::printf(")\n");
}

}  // namespace

void add_vlm_bench(CLI::App& bench) {
  auto o = std::make_shared<VlmBenchOptions>();
  auto* c = bench.add_subcommand(
      "vlm",
      "Image-to-first-token latency (encoder / connector / prefill) and batch-1 decode tokens/s "
      "of VLM pairs of the papers' shapes (random weights, one model in memory at a time)");
  c->add_option("--pairs", o->pairs,
                "Pairs A:B of VLM presets compared side by side (" +
                    join(models::vlm_preset_names()) +
                    "); the papers' shapes take ~5-6 GB peak each in f32 (mamba-vl-790m 4.7, "
                    "pythia-vl-1b 6.0)")
      ->delimiter(',')
      ->capture_default_str();
  c->add_flag("--small", o->small,
              "Quick check: pairs mamba-vl-tiny:pythia-vl-tiny with vocab 1104 (overrides "
              "--pairs and --vocab)");
  c->add_option("--image-size", o->image_size,
                "Square input size in pixels (default: the preset's, 336 for the papers' EVA-02)")
      ->check(CLI::Range(int64_t{16}, int64_t{2048}));
  c->add_option("--decode-tokens", o->decode_tokens, "Greedy decode steps timed after the first")
      ->check(CLI::Range(int64_t{1}, int64_t{100000}))
      ->capture_default_str();
  c->add_option("--vocab", o->vocab,
                "LM vocabulary (no tokenizer is loaded; 50277 = GPT-NeoX; the tiny presets need "
                "one, e.g. 1104 as the scenes' tokenizer)")
      ->check(CLI::Range(int64_t{16}, int64_t{1} << 20))
      ->capture_default_str();
  c->add_option("--bandwidth", o->bandwidth_gbs,
                "Memory bandwidth (GB/s) for the decode bound (default: measured in this run)")
      ->check(cli::NonNegative);
  cli::add_runtime_options(*c, o->rt);
  c->add_option("--bound-repeats", o->bound_repeats,
                "Measurements of the machine's bounds (fp32 GEMM, read bandwidth), best of, before "
                "and after the models")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  c->callback([o]() { run(*o); });
}

}  // namespace mambavl::bench
