// mambavl command-line tool: one binary, subcommands.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include "bench/bench_lm.h"
#include "cli_common.h"
#include "common/error.h"
#include "eval/perplexity.h"
#include "generate/generate.h"
#include "models/presets.h"
#include "models/registry.h"

using namespace mambavl;

namespace {

std::string read_text_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  MVL_CHECK(f, path, ": cannot open file");
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

void add_generate(CLI::App& app) {
  struct Opts {
    cli::RuntimeOptions rt;
    std::string model, prompt, ids;
    int64_t max_new = 32, top_k = 0;
    bool greedy = false, print_ids = false, stats = false;
    double temperature = 1.0, top_p = 1.0;
    uint64_t seed = 0;
  };
  auto o = std::make_shared<Opts>();
  auto* c = app.add_subcommand("generate", "Generate text from a prompt, streaming tokens as they are produced");
  c->add_option("--model", o->model, "Model folder (config.json + model.safetensors)")->required();
  auto* p = c->add_option("--prompt", o->prompt, "Prompt text (needs tokenizer.json in the model folder)");
  auto* i = c->add_option("--ids", o->ids, "Prompt as comma-separated token ids, e.g. 1,2,3");
  p->excludes(i);
  c->add_option("--max-new-tokens", o->max_new, "Tokens to generate")->check(CLI::NonNegativeNumber);
  auto* g = c->add_flag("--greedy", o->greedy, "Argmax decoding");
  c->add_option("--temperature", o->temperature, "Sampling temperature (> 0)")->excludes(g);
  c->add_option("--top-k", o->top_k, "Sample among the k most likely tokens (0 = off)")->excludes(g);
  c->add_option("--top-p", o->top_p, "Nucleus sampling mass in (0, 1] (1 = off)")->excludes(g);
  c->add_option("--seed", o->seed, "Random seed for sampling");
  c->add_flag("--print-ids", o->print_ids, "Print the generated token ids on one line, comma separated");
  c->add_flag("--stats", o->stats, "Print prefill / decode speed to stderr");
  cli::add_runtime_options(*c, o->rt);
  c->callback([o]() {
    cli::apply_runtime_options(o->rt);
    MVL_CHECK(!o->prompt.empty() || !o->ids.empty(), "generate: give --prompt TEXT or --ids 1,2,3");
    auto model = cli::load_model(o->model, o->rt);
    std::vector<int64_t> prompt;
    if (!o->ids.empty()) {
      prompt = cli::parse_ids(o->ids);
    } else {
      MVL_FAIL(o->model, ": --prompt needs a tokenizer, which this build does not have yet; use --ids");
    }
    generate::GenerateOptions go;
    go.max_new_tokens = o->max_new;
    go.sampling.greedy = o->greedy;
    go.sampling.temperature = o->temperature;
    go.sampling.top_k = o->top_k;
    go.sampling.top_p = o->top_p;
    go.sampling.seed = o->seed;
    generate::GenerateStats st;
    bool first = true;
    auto out = generate::generate(*model, prompt, go, [&](int64_t tok) {
      if (!o->print_ids) {
        std::cout << (first ? "" : " ") << tok << std::flush;
        first = false;
      }
    }, &st);
    if (o->print_ids) {
      for (size_t k = 0; k < out.size(); ++k) std::cout << (k ? "," : "") << out[k];
    }
    std::cout << "\n";
    if (o->stats) {
      std::fprintf(stderr, "prefill: %lld tokens in %.3f s (%.1f tok/s); decode: %lld tokens in %.3f s (%.1f tok/s)\n",
                   static_cast<long long>(st.prompt_tokens), st.prefill_seconds,
                   st.prompt_tokens / std::max(st.prefill_seconds, 1e-9),
                   static_cast<long long>(st.new_tokens), st.decode_seconds,
                   st.new_tokens > 1 ? (st.new_tokens - 1) / std::max(st.decode_seconds, 1e-9) : 0.0);
    }
  });
}

void add_perplexity(CLI::App& app) {
  struct Opts {
    cli::RuntimeOptions rt;
    std::string model, ids, text, file;
  };
  auto o = std::make_shared<Opts>();
  auto* c = app.add_subcommand("perplexity", "Mean negative log-likelihood of each token given its prefix");
  c->add_option("--model", o->model, "Model folder")->required();
  auto* a = c->add_option("--ids", o->ids, "Token ids, comma separated");
  auto* b = c->add_option("--text", o->text, "Text (needs tokenizer.json in the model folder)");
  auto* f = c->add_option("--file", o->file, "Text file (needs tokenizer.json in the model folder)");
  a->excludes(b)->excludes(f);
  b->excludes(f);
  cli::add_runtime_options(*c, o->rt);
  c->callback([o]() {
    cli::apply_runtime_options(o->rt);
    MVL_CHECK(!o->ids.empty() || !o->text.empty() || !o->file.empty(),
              "perplexity: give --ids, --text or --file");
    auto model = cli::load_model(o->model, o->rt);
    std::vector<int64_t> ids;
    if (!o->ids.empty()) {
      ids = cli::parse_ids(o->ids);
    } else {
      MVL_FAIL(o->model, ": --text/--file need a tokenizer, which this build does not have yet; use --ids");
    }
    eval::NllResult r = eval::mean_nll(*model, ids);
    std::printf("nll: %.6f ppl: %.4f\n", r.nll, r.ppl);
    std::fprintf(stderr, "scored %lld tokens\n", static_cast<long long>(r.tokens));
  });
}

void add_init(CLI::App& app) {
  struct Opts {
    std::string preset = "mamba-tiny", out;
    uint64_t seed = 0;
  };
  auto o = std::make_shared<Opts>();
  auto* c = app.add_subcommand("init", "Write a randomly initialised model folder of a named shape");
  c->add_option("--preset", o->preset, "Shape: " + join(models::preset_names()))
      ->check(CLI::IsMember(models::preset_names()));
  c->add_option("--out", o->out, "Output folder")->required();
  c->add_option("--seed", o->seed, "Initialisation seed");
  c->callback([o]() {
    auto m = models::make_preset(o->preset, o->seed);
    m->save(o->out);
    std::cout << "wrote " << o->preset << " (" << m->arch() << ", " << m->num_layers() << " layers, hidden "
              << m->hidden_size() << ", vocab " << m->vocab_size() << ") to " << o->out << "\n";
  });
}

void add_info(CLI::App& app) {
  auto model = std::make_shared<std::string>();
  auto* c = app.add_subcommand("info", "Describe a model folder");
  c->add_option("--model", *model, "Model folder")->required();
  c->callback([model]() {
    auto m = models::load_causal_lm(*model);
    int64_t n = 0;
    for (auto& p : m->module().parameters()) n += p.numel();
    std::cout << "architecture: " << m->arch() << "\nlayers: " << m->num_layers()
              << "\nhidden: " << m->hidden_size() << "\nvocab (rows): " << m->vocab_size()
              << "\nparameters: " << n << "\n";
  });
}

}  // namespace

int main(int argc, char** argv) {
  // LibTorch wheels pick AVX2 kernels by default on this CPU class; AVX-512 makes its vectorised
  // exp/log ~2x faster (PERF-NOTES). Must be set before the first ATen dispatch; a user's own
  // ATEN_CPU_CAPABILITY wins.
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw"))
    setenv("ATEN_CPU_CAPABILITY", "avx512", /*overwrite=*/0);
  CLI::App app{"mambavl: state-space (Mamba) and Transformer language and vision-language models"};
  app.require_subcommand(1);
  add_generate(app);
  add_perplexity(app);
  add_init(app);
  add_info(app);
  auto* bench = app.add_subcommand("bench", "Benchmarks (ratios measured side by side in one run)");
  bench->require_subcommand(1);
  bench::add_lm_bench(*bench);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const mambavl::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  } catch (const c10::Error& e) {
    std::cerr << "error: " << e.what_without_backtrace() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
