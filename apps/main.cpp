// mambavl command-line tool: one binary, subcommands.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include "bench/bench.h"
#include "bench/bench_lm.h"
#include "bench/bench_tokenizer.h"
#include "bench/bench_train.h"
#include "bench/bench_vision.h"
#include "bench/bench_vlm.h"
#include "cli/cli_common.h"
#include "cmd_data.h"
#include "cmd_encode.h"
#include "cmd_experiment.h"
#include "cmd_vision.h"
#include "cmd_vlm.h"
#include "common/cpu.h"
#include "common/error.h"
#include "common/sysinfo.h"
#include "eval/perplexity.h"
#include "generate/generate.h"
#include "io/file.h"
#include "io/tokenizer.h"
#include "models/presets.h"
#include "models/registry.h"
#include "models/vlm.h"
#include "train/trainer.h"

using namespace mambavl;

namespace {

std::string read_text_file(const std::string& path) {
  return io::read_file(path, io::kMaxTextBytes, "text");
}

io::Tokenizer require_tokenizer(const std::string& model_dir, const char* what) {
  auto tok = io::Tokenizer::find_in(model_dir);
  MVL_CHECK(tok, model_dir, ": ", what,
            " needs a tokenizer, but the folder has no tokenizer.json (give token ids with --ids "
            "instead, or copy the model's tokenizer.json into the folder)");
  return std::move(*tok);
}

void add_generate(CLI::App& app) {
  struct Opts {
    cli::RuntimeOptions rt;
    std::string model, prompt, ids, prompt_file, image;
    int64_t max_new = 32, top_k = 0, batch_size = 0;
    bool greedy = false, print_ids = false, stats = false, ignore_eos = false;
    double temperature = 1.0, top_p = 1.0;
    uint64_t seed = 0;
  };
  auto o = std::make_shared<Opts>();
  auto* c = app.add_subcommand(
      "generate", "Generate text from a prompt, streaming tokens as they are produced");
  c->add_option("--model", o->model, "Model folder (config.json + model.safetensors)")->required();
  auto* p = c->add_option("--prompt", o->prompt,
                          "Prompt text (needs tokenizer.json in the model folder)");
  auto* i = c->add_option("--ids", o->ids, "Prompt as comma-separated token ids, e.g. 1,2,3");
  p->excludes(i);
  auto* pf = c->add_option("--prompt-file", o->prompt_file,
                           "Text file, one prompt per line (blank lines skipped), generated as one "
                           "batch; prints 'LINE<tab>continuation' per prompt (no streaming)");
  pf->excludes(p)->excludes(i);
  c->add_option("--image", o->image,
                "Image file, for a vision-language model folder: the prompt follows the image")
      ->excludes(pf)
      ->excludes(i);
  c->add_option("--batch-size", o->batch_size, "With --prompt-file: at most N prompts per batch")
      ->check(cli::Positive)
      ->needs(pf);
  c->add_option("--max-new-tokens", o->max_new,
                "Tokens to generate (GPT-NeoX: prompt + tokens must fit its context, "
                "max_position_embeddings; Mamba / hybrid: no limit)")
      ->check(cli::NonNegative);
  auto* g = c->add_flag("--greedy", o->greedy, "Argmax decoding");
  c->add_option("--temperature", o->temperature, "Sampling temperature (> 0)")->excludes(g);
  c->add_option("--top-k", o->top_k, "Sample among the k most likely tokens (0 = off)")
      ->excludes(g);
  c->add_option("--top-p", o->top_p, "Nucleus sampling mass in (0, 1] (1 = off)")->excludes(g);
  c->add_option("--seed", o->seed, "Random seed for sampling");
  c->add_flag("--print-ids", o->print_ids,
              "Print the generated token ids on one line, comma separated");
  c->add_flag("--stats", o->stats, "Print prefill / decode speed to stderr");
  c->add_flag("--ignore-eos", o->ignore_eos, "Keep generating after the end-of-text token");
  cli::add_runtime_options(*c, o->rt, /*int8=*/true);
  c->callback([o]() {
    cli::apply_runtime_options(o->rt);
    const bool vlm = models::is_vlm_folder(o->model);
    MVL_CHECK(!vlm || o->rt.dtype != "int8", o->model,
              ": --dtype int8 is for language models (this is a vision-language model folder)");
    MVL_CHECK(o->image.empty() || vlm, o->model,
              ": --image needs a vision-language model folder (this is a language model)");
    MVL_CHECK(!vlm || !o->image.empty(), o->model,
              ": a vision-language model folder: give --image FILE (and --prompt TEXT)");
    generate::GenerateOptions go;
    go.max_new_tokens = o->max_new;
    go.sampling.greedy = o->greedy;
    go.sampling.temperature = o->temperature;
    go.sampling.top_k = o->top_k;
    go.sampling.top_p = o->top_p;
    go.sampling.seed = o->seed;
    go.batch_size = o->batch_size;
    if (vlm) {
      if (o->ignore_eos) go.eos_id = -1;  // no token has id -1: never stops early
      return cli::generate_with_image(o->model, o->image, o->prompt, go, o->rt.dtype, o->print_ids,
                                      o->stats);
    }
    MVL_CHECK(!o->prompt.empty() || !o->ids.empty() || !o->prompt_file.empty(),
              "generate: give --prompt TEXT, --ids 1,2,3 or --prompt-file FILE");
    auto model = cli::load_model(o->model, o->rt);
    std::vector<int64_t> prompt;
    std::optional<io::Tokenizer> tok = io::Tokenizer::find_in(o->model);
    std::vector<std::vector<int64_t>> file_prompts;
    std::vector<int64_t> file_lines;  // 1-based line number of each prompt
    if (!o->prompt_file.empty()) {
      tok = require_tokenizer(o->model, "--prompt-file");
      std::istringstream in(read_text_file(o->prompt_file));
      std::string line;
      for (int64_t n = 1; std::getline(in, line); ++n) {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line.empty()) continue;
        file_prompts.push_back(tok->encode(line));
        MVL_CHECK(!file_prompts.back().empty(), o->prompt_file, ":", n,
                  ": the line encodes to no tokens");
        file_lines.push_back(n);
      }
      MVL_CHECK(!file_prompts.empty(), o->prompt_file, ": no prompts (every line is blank)");
    } else if (!o->ids.empty()) {
      prompt = cli::parse_ids(o->ids);
    } else {
      tok = require_tokenizer(o->model, "--prompt");
      prompt = tok->encode(o->prompt);
    }
    if (tok && !o->ignore_eos) {
      go.eos_id = tok->eos_id();
      if (!go.eos_id) go.eos_id = tok->token_to_id("<|endoftext|>");
    }
    generate::GenerateStats st;
    auto print_stats = [&] {
      if (!o->stats) return;
      std::fprintf(
          stderr,
          "prefill: %lld tokens in %.3f s (%.1f tok/s); decode: %lld tokens in %.3f s (%.1f "
          "tok/s)\n",
          static_cast<long long>(st.prompt_tokens), st.prefill_seconds,
          st.prompt_tokens / std::max(st.prefill_seconds, 1e-9),
          static_cast<long long>(st.new_tokens), st.decode_seconds,
          st.new_tokens > 1 ? (st.new_tokens - 1) / std::max(st.decode_seconds, 1e-9) : 0.0);
    };
    if (!file_prompts.empty()) {
      auto outs = generate::generate_batch_ids(*model, file_prompts, go, {}, &st);
      for (size_t r = 0; r < outs.size(); ++r) {
        std::string text;
        if (o->print_ids) {
          for (size_t k = 0; k < outs[r].size(); ++k)
            text += (k ? "," : "") + std::to_string(outs[r][k]);
        } else {
          for (char ch : tok->decode(outs[r], /*skip_special_tokens=*/true))
            text += ch == '\n' ? std::string("\\n") : std::string(1, ch);
        }
        std::cout << file_lines[r] << "\t" << text << "\n";
      }
      std::cout << std::flush;
      print_stats();
      return;
    }
    bool first = true;
    std::optional<cli::TextStreamer> streamer;
    const bool text_out = tok && !o->print_ids;
    // Before the prompt is echoed: a length error must not land on the prompt's line.
    generate::check_context(*model, {static_cast<int64_t>(prompt.size())}, go.max_new_tokens);
    if (text_out) {
      streamer.emplace(*tok);
      std::cout << o->prompt << std::flush;
    }
    auto out = generate::generate(
        *model, prompt, go,
        [&](int64_t id) {
          if (text_out) {
            streamer->push(id);
          } else if (!o->print_ids) {
            std::cout << (first ? "" : " ") << id << std::flush;
            first = false;
          }
        },
        &st);
    if (text_out) streamer->finish();
    if (o->print_ids) {
      for (size_t k = 0; k < out.size(); ++k) std::cout << (k ? "," : "") << out[k];
    }
    std::cout << std::endl;
    print_stats();
  });
}

void add_perplexity(CLI::App& app) {
  struct Opts {
    cli::RuntimeOptions rt;
    std::string model, ids, text, file;
  };
  auto o = std::make_shared<Opts>();
  auto* c = app.add_subcommand("perplexity",
                               "Mean negative log-likelihood of each token given its prefix");
  c->add_option("--model", o->model, "Model folder")->required();
  auto* a = c->add_option("--ids", o->ids, "Token ids, comma separated");
  auto* b = c->add_option("--text", o->text, "Text (needs tokenizer.json in the model folder)");
  auto* f =
      c->add_option("--file", o->file, "Text file (needs tokenizer.json in the model folder)");
  a->excludes(b)->excludes(f);
  b->excludes(f);
  cli::add_runtime_options(*c, o->rt, /*int8=*/true);
  c->callback([o]() {
    cli::apply_runtime_options(o->rt);
    MVL_CHECK(!o->ids.empty() || !o->text.empty() || !o->file.empty(),
              "perplexity: give --ids, --text or --file");
    auto model = cli::load_model(o->model, o->rt);
    std::vector<int64_t> ids;
    if (!o->ids.empty()) {
      ids = cli::parse_ids(o->ids);
    } else {
      io::Tokenizer tok = require_tokenizer(o->model, o->text.empty() ? "--file" : "--text");
      ids = tok.encode(o->text.empty() ? read_text_file(o->file) : o->text);
    }
    eval::NllResult r = eval::mean_nll(*model, ids);
    std::printf("nll: %.6f ppl: %.4f\n", r.nll, r.ppl);
    std::fprintf(stderr, "scored %lld tokens\n", static_cast<long long>(r.tokens));
  });
}

void add_tokenize(CLI::App& app) {
  struct Opts {
    std::string model, tokenizer, text, file;
    bool ids_only = false, special = false;
  };
  auto o = std::make_shared<Opts>();
  auto* c = app.add_subcommand("tokenize", "Show the token ids and pieces of a text");
  auto* m = c->add_option("--model", o->model, "Model folder with tokenizer.json");
  auto* t = c->add_option("--tokenizer", o->tokenizer, "A tokenizer.json file");
  m->excludes(t);
  auto* x = c->add_option("--text", o->text, "Text to tokenize");
  c->add_option("--file", o->file, "Text file to tokenize")->excludes(x);
  c->add_flag("--ids-only", o->ids_only, "Print only the ids, comma separated");
  c->add_flag("--add-special-tokens", o->special,
              "Apply the tokenizer's post-processor (e.g. BOS)");
  c->callback([o]() {
    MVL_CHECK(!o->model.empty() || !o->tokenizer.empty(),
              "tokenize: give --model DIR or --tokenizer FILE");
    io::Tokenizer tok = o->tokenizer.empty() ? require_tokenizer(o->model, "tokenize")
                                             : io::Tokenizer::from_file(o->tokenizer);
    const std::string text = o->file.empty() ? o->text : read_text_file(o->file);
    auto ids = tok.encode(text, o->special);
    for (size_t i = 0; i < ids.size(); ++i) std::cout << (i ? "," : "") << ids[i];
    std::cout << "\n";
    if (o->ids_only) return;
    std::cout << ids.size() << " tokens\n";
    for (int64_t id : ids) {
      std::cout << id << "\t"
                << nlohmann::json(tok.id_to_token(id))
                       .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
                << "\t"
                << nlohmann::json(tok.decode({id}))
                       .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
                << "\n";
    }
  });
}

void add_init(CLI::App& app) {
  struct Opts {
    std::string tokenizer;
    std::string preset = "mamba-tiny", out;
    uint64_t seed = 0;
    bool overwrite = false;
  };
  auto o = std::make_shared<Opts>();
  auto* c =
      app.add_subcommand("init", "Write a randomly initialised model folder of a named shape");
  std::vector<std::string> names = models::preset_names();
  for (const auto& n : models::vlm_preset_names()) names.push_back(n);
  c->add_option("--preset", o->preset,
                "Shape: language models " + join(models::preset_names()) +
                    "; vision-language models " + join(models::vlm_preset_names()))
      ->check(CLI::IsMember(names));
  c->add_option("--out", o->out,
                "Output folder (new or empty; written whole, then moved into place)")
      ->required();
  c->add_flag("--overwrite", o->overwrite,
              "Replace what a non-empty --out holds (by default such a folder is refused)");
  c->add_option("--seed", o->seed, "Initialisation seed");
  c->add_option("--tokenizer", o->tokenizer,
                "Copy this tokenizer.json into the folder (the vocabulary is sized to fit it)")
      ->check(CLI::ExistingFile);
  c->callback([o]() {
    // A used folder is never replaced by accident; with --overwrite the new folder is written
    // beside it and swapped in, so no file of the old model is left mixed into the new one.
    train::check_output_folder(o->out, {}, o->overwrite, "");
    std::string what;
    train::write_dir_atomically(o->out, [&](const std::filesystem::path& tmp) {
      if (models::is_vlm_preset(o->preset)) {
        what = cli::init_vlm_preset(o->preset, o->tokenizer, o->seed, tmp);
        return;
      }
      int64_t vocab = 0;
      if (!o->tokenizer.empty()) vocab = io::Tokenizer::from_file(o->tokenizer).vocab_size();
      auto m = models::make_preset(o->preset, o->seed, vocab);
      m->save(tmp);
      if (!o->tokenizer.empty())
        std::filesystem::copy_file(o->tokenizer, tmp / "tokenizer.json",
                                   std::filesystem::copy_options::overwrite_existing);
      what = o->preset + " (" + m->arch() + ", " + std::to_string(m->num_layers()) +
             " layers, hidden " + std::to_string(m->hidden_size()) + ", vocab " +
             std::to_string(m->vocab_size()) + ")";
    });
    std::cout << "wrote " << what << " to " << o->out << "\n";
  });
}

void add_quantize(CLI::App& app) {
  struct Opts {
    std::string model, out, dtype = "int8";
    bool overwrite = false;
  };
  auto o = std::make_shared<Opts>();
  auto* c = app.add_subcommand(
      "quantize",
      "Write a copy of a language model folder with int8 weights (per-row symmetric; "
      "docs/quantization.md)");
  c->add_option("--model", o->model, "Model folder (floating-point weights)")->required();
  c->add_option("--out", o->out, "Output folder (new or empty; written whole, then moved into place)")
      ->required();
  c->add_option("--dtype", o->dtype, "Weight type: int8")->check(CLI::IsMember({"int8"}));
  c->add_flag("--overwrite", o->overwrite,
              "Replace what a non-empty --out holds (by default such a folder is refused)");
  c->callback([o]() {
    MVL_CHECK(!models::is_vlm_folder(o->model), o->model,
              ": quantize is for language model folders (this is a vision-language model)");
    train::check_output_folder(o->out, {}, o->overwrite, "");
    auto m = models::load_causal_lm(o->model);
    int64_t before = 0, after = 0;
    for (const auto& p : m->module().parameters()) before += p.numel() * p.element_size();
    m->quantize_int8();
    for (const auto& p : m->module().parameters()) after += p.numel() * p.element_size();
    for (const auto& b : m->module().buffers()) after += b.numel() * b.element_size();
    // save() writes config.json (with quantization_config), the weights and the tokenizer files.
    train::write_dir_atomically(o->out, [&](const std::filesystem::path& tmp) { m->save(tmp); });
    std::printf("wrote %s (int8 weights): %.1f MB of weights, was %.1f MB\n", o->out.c_str(),
                after / 1e6, before / 1e6);
  });
}

void add_info(CLI::App& app) {
  auto model = std::make_shared<std::string>();
  auto* c = app.add_subcommand("info", "Describe a model folder");
  c->add_option("--model", *model, "Model folder")->required();
  c->callback([model]() {
    if (cli::describe_vlm_folder(*model, std::cout)) return;  // vision-language (cmd_vlm.h)
    if (cli::describe_folder(*model, std::cout)) return;      // vision / classifier (cmd_encode.h)
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
  // `bench lm --load-peak` runs this binary as a child and reads its peak resident memory from
  // here: a forked child's ru_maxrss also counts the parent's pages it was forked with (Linux
  // records the old address space's high-water mark at exec), VmHWM is this image's own.
  if (const char* f = std::getenv("MAMBAVL_PEAK_RSS_FILE"); f && *f) {
    static const std::string peak_file = f;
    std::atexit([] { std::ofstream(peak_file) << sys::peak_rss_bytes() << "\n"; });
  }
  CLI::App app{"mambavl: state-space (Mamba) and Transformer language and vision-language models"};
  app.require_subcommand(1);
  add_generate(app);
  add_perplexity(app);
  add_tokenize(app);
  add_init(app);
  add_quantize(app);
  add_info(app);
  cli::add_vision_commands(app);
  cli::add_encode_command(app);
  cli::add_data_commands(app);
  cli::add_vlm_commands(app);
  cli::add_experiment_commands(app);
  cli::set_experiment_command_line(argc, argv);
  auto* bench = app.add_subcommand("bench", "Benchmarks (ratios measured side by side in one run)");
  bench->require_subcommand(1);
  bench::add_scan_bench(*bench);
  bench::add_attention_bench(*bench);
  bench::add_lm_bench(*bench);
  bench::add_gemv_bench(*bench);
  bench::add_tokenizer_bench(*bench);
  bench::add_vision_bench(*bench);
  bench::add_train_bench(*bench);
  bench::add_vlm_bench(*bench);
  // Every failure is one printable line "error: ..." and exit status 1 (help and version: 0).
  auto fail = [](const std::string& msg) {
    std::string m = printable(msg);
    std::cerr << (m.rfind("error: ", 0) == 0 ? "" : "error: ") << m << "\n";
    return 1;
  };
  try {
    cpu::active_isa();  // a bad MAMBAVL_ISA is one error line before any work
    // CLI11 would say only "A subcommand is required" for a mistyped command: name it.
    if (argc > 1 && argv[1][0] != '-') {
      bool known = false;
      const auto& capp = app;
      for (const CLI::App* sub : capp.get_subcommands([](const CLI::App*) { return true; }))
        known = known || sub->check_name(argv[1]);
      if (!known)
        return fail(std::string("unknown command '") + argv[1] + "' (see 'mambavl --help')");
    }
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {  // --help, --help-all, --version: exit 0
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // CLI11's own message (unknown option, missing value, conversion, validator), plus where to
    // look: the subcommand that was being parsed.
    std::string sub = "mambavl";
    for (const CLI::App* a = &app; a != nullptr;) {
      const auto subs = a->get_subcommands();
      if (subs.empty()) break;
      a = subs.front();
      sub += " " + a->get_name();
    }
    return fail(std::string(e.what()) + " (see '" + sub + " --help')");
  } catch (const mambavl::Error& e) {
    return fail(e.what());
  } catch (const c10::Error& e) {
    return fail(e.what_without_backtrace());
  } catch (const std::bad_alloc&) {
    return fail("out of memory (std::bad_alloc)");
  } catch (const std::exception& e) {
    return fail(e.what());
  }
  return 0;
}
