#include "cmd_vision.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>
#include <torch/nn/module.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "cli/cli_common.h"
#include "common/error.h"
#include "common/parse.h"
#include "data/image_dataset.h"
#include "eval/classification.h"
#include "io/image.h"
#include "models/vision.h"
#include "train/classifier_trainer.h"

namespace mambavl::cli {

namespace fs = std::filesystem;

namespace {

const std::vector<std::string> kArchs = {"mambaout", "mambaout_ssm", "vit"};
const std::vector<std::string> kVariants = {"femto", "kobe", "tiny", "small", "base"};

// "48,96,192,288" -> {48, 96, 192, 288}; Error naming the option otherwise.
std::vector<int64_t> parse_int_list(const std::string& s, const char* option) {
  std::vector<int64_t> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    while (!item.empty() && item.back() == ' ') item.pop_back();
    while (!item.empty() && item.front() == ' ') item.erase(item.begin());
    out.push_back(parse_int64(item, option, 1, int64_t{1} << 20));
  }
  MVL_CHECK(!out.empty(), option, ": empty list");
  return out;
}

void set_threads(int threads) {
  if (threads > 0) at::set_num_threads(threads);
}

// A dataset whose labels are remapped into a model's class list by class name.
class RelabeledDataset : public data::ImageDataset {
 public:
  RelabeledDataset(std::shared_ptr<const data::ImageDataset> base,
                   const std::vector<std::string>& model_classes, const std::string& where)
      : base_(std::move(base)), classes_(model_classes) {
    std::map<std::string, int64_t> index;
    for (size_t i = 0; i < model_classes.size(); ++i)
      index[model_classes[i]] = static_cast<int64_t>(i);
    for (const auto& c : base_->classes()) {
      auto it = index.find(c);
      MVL_CHECK(it != index.end(), where, ": class folder '", c,
                "' is not one of the model's classes (", join(model_classes), ")");
      map_.push_back(it->second);
    }
  }
  int64_t size() const override { return base_->size(); }
  const std::vector<std::string>& classes() const override { return classes_; }
  int64_t label(int64_t i) const override { return map_.at(base_->label(i)); }
  io::Image image(int64_t i) const override { return base_->image(i); }
  std::string name(int64_t i) const override { return base_->name(i); }

 private:
  std::shared_ptr<const data::ImageDataset> base_;
  std::vector<std::string> classes_;
  std::vector<int64_t> map_;
};

// ---- train-classifier ----

struct TrainOpts {
  std::string arch = "mambaout", variant, dims, depths, data, out, pool;
  int64_t heads = 0, patch_size = 0;
  bool causal = false, no_augment = false, no_progress = false, resume = false, overwrite = false;
  int64_t synthetic = 0, num_classes = 10, image_size = 0, epochs = 5, steps = 0, batch = 32;
  int64_t warmup_steps = 0, save_every = 1, eval_batch = 64;
  double val_fraction = 0.1, lr = 1e-3, weight_decay = 0.05, warmup = 1.0, label_smoothing = 0.1;
  double drop_path = 0.0, min_lr_ratio = 0.01, grad_clip = 0.0, crop_scale_min = 0.08;
  uint64_t seed = 0;
  int threads = 0;
};

// The make_classifier config (vision.h) for the chosen architecture.
nlohmann::json model_config(const TrainOpts& o, int64_t num_classes, int64_t image_size) {
  MVL_CHECK(std::find(kArchs.begin(), kArchs.end(), o.arch) != kArchs.end(),
            "--arch: unknown architecture '", o.arch, "' (expected ", join(kArchs), ")");
  nlohmann::json cfg = {{"architecture", o.arch},
                        {"num_classes", num_classes},
                        {"image_size", image_size},
                        {"drop_path_rate", o.drop_path}};
  const bool explicit_shape = !o.dims.empty() || !o.depths.empty();
  if (!o.variant.empty() && o.arch != "vit") {
    MVL_CHECK(std::find(kVariants.begin(), kVariants.end(), o.variant) != kVariants.end(),
              "--variant: unknown size '", o.variant, "' (expected ", join(kVariants), ")");
  }
  MVL_CHECK(o.variant.empty() || !explicit_shape,
            "--variant cannot be combined with --dims / --depths");
  if (o.arch == "vit") {
    // ViT sizes: DeiT's tiny / small / base (patch 16), or --dims WIDTH --depths LAYERS; the
    // default is a laptop-sized 4-layer, 64-wide ViT.
    int64_t width = 64, layers = 4, heads = o.heads > 0 ? o.heads : 0;
    if (!o.variant.empty()) {
      const std::map<std::string, std::array<int64_t, 3>> sizes = {
          {"tiny", {192, 12, 3}}, {"small", {384, 12, 6}}, {"base", {768, 12, 12}}};
      auto it = sizes.find(o.variant);
      MVL_CHECK(it != sizes.end(), "--variant '", o.variant,
                "' is a MambaOut size; ViT sizes are tiny, small, base");
      width = it->second[0];
      layers = it->second[1];
      if (heads == 0) heads = it->second[2];
    }
    if (!o.dims.empty()) {
      const auto d = parse_int_list(o.dims, "--dims");
      MVL_CHECK(d.size() == 1, "--dims: a ViT has one width, e.g. --dims 192");
      width = d[0];
    }
    if (!o.depths.empty()) {
      const auto d = parse_int_list(o.depths, "--depths");
      MVL_CHECK(d.size() == 1, "--depths: a ViT has one depth (layers), e.g. --depths 12");
      layers = d[0];
    }
    // Head width 64 as DeiT; narrow laptop models use heads of 16.
    if (heads == 0) heads = width >= 128 ? width / 64 : std::max<int64_t>(1, width / 16);
    if (o.heads == 0 && width % heads != 0) heads = 1;
    MVL_CHECK(width % heads == 0, "--heads ", heads, " does not divide the ViT width ", width);
    const int64_t patch = o.patch_size > 0 ? o.patch_size : (image_size <= 64 ? 4 : 16);
    MVL_CHECK(image_size % patch == 0, "--image-size ", image_size,
              " is not a multiple of the patch size ", patch);
    cfg["hidden_size"] = width;
    cfg["num_layers"] = layers;
    cfg["num_heads"] = heads;
    cfg["patch_size"] = patch;
    cfg["causal"] = o.causal;
    cfg["pool"] = o.pool.empty() ? (o.causal ? "last" : "mean") : o.pool;
    return cfg;
  }
  MVL_CHECK(o.heads == 0 && o.patch_size == 0 && o.pool.empty(),
            "--heads / --patch-size / --pool are ViT options (use them with --arch vit)");
  MVL_CHECK(!o.causal, "--causal is a ViT option (use it with --arch vit)");
  if (!o.variant.empty()) {
    cfg["variant"] = o.variant;
    return cfg;
  }
  // Laptop-sized default: a narrow, shallow MambaOut that trains in seconds on 32-px images.
  std::vector<int64_t> dims = {16, 32, 64, 96}, depths = {1, 1, 2, 1};
  if (!o.dims.empty()) dims = parse_int_list(o.dims, "--dims");
  if (!o.depths.empty()) depths = parse_int_list(o.depths, "--depths");
  MVL_CHECK(dims.size() == 4 && depths.size() == 4,
            "--dims and --depths need 4 values (one per stage), got ", dims.size(), " and ",
            depths.size());
  cfg["dims"] = dims;
  cfg["depths"] = depths;
  return cfg;
}

void add_train_classifier(CLI::App& app) {
  auto o = std::make_shared<TrainOpts>();
  auto* c = app.add_subcommand(
      "train-classifier",
      "Train an image classifier from scratch (MambaOut / MambaOut with an SSM mixer / ViT) on "
      "an image folder or the built-in synthetic shapes, and save it");
  c->add_option("--arch", o->arch, "Architecture: mambaout, mambaout_ssm or vit")
      ->capture_default_str();
  c->add_option("--variant", o->variant,
                "Size. MambaOut: femto, kobe, tiny, small, base (default: a laptop-sized model, "
                "dims 16,32,64,96, depths 1,1,2,1). ViT: tiny, small, base (DeiT sizes; "
                "default: width 64, 4 layers)");
  c->add_option("--dims", o->dims,
                "MambaOut stage widths, 4 values, e.g. 48,96,192,288; ViT: the width, e.g. 192");
  c->add_option("--depths", o->depths,
                "MambaOut blocks per stage, 4 values, e.g. 3,3,9,3; ViT: the layers, e.g. 12");
  c->add_flag("--causal", o->causal, "ViT: causal instead of fully visible self-attention");
  c->add_option("--heads", o->heads,
                "ViT: attention heads (default: width / 64; width / 16 below 128)");
  c->add_option("--patch-size", o->patch_size,
                "ViT: patch size (default: 4 for images up to 64 px, else 16)");
  c->add_option("--pool", o->pool, "ViT: mean, cls or last (default: mean; last with --causal)");
  auto* d = c->add_option("--data", o->data, "Image folder: DIR/<class>/*.png|jpg|jpeg");
  auto* s = c->add_option("--synthetic", o->synthetic,
                          "Use N built-in synthetic images (coloured shapes) instead of --data")
               ->check(IntRange(1, data::kMaxSyntheticSamples));
  d->excludes(s);
  c->add_option("--num-classes", o->num_classes, "Classes of the synthetic data")
      ->capture_default_str();
  c->add_option("--image-size", o->image_size,
                "Square input size (default: 32 with --synthetic, 224 with --data)");
  c->add_option("--val-fraction", o->val_fraction,
                "Fraction of each class held out for validation (0 = none)")
      ->capture_default_str();
  auto* e = c->add_option("--epochs", o->epochs, "Epochs")->capture_default_str();
  c->add_option("--steps", o->steps, "Stop after this many optimizer steps (instead of --epochs)")
      ->excludes(e);
  c->add_option("--batch", o->batch, "Batch size")->capture_default_str();
  c->add_option("--lr", o->lr, "Peak learning rate (AdamW)")->capture_default_str();
  c->add_option("--weight-decay", o->weight_decay,
                "AdamW weight decay (not on norms, biases, embeddings)")
      ->capture_default_str();
  auto* w = c->add_option("--warmup", o->warmup,
                          "Linear warmup, in epochs (fractions allowed; default: 1 epoch, at most "
                          "a fifth of --epochs, so that short runs also decay)");
  c->add_option("--warmup-steps", o->warmup_steps, "Linear warmup, in steps (instead of --warmup)")
      ->excludes(w);
  c->add_option("--min-lr-ratio", o->min_lr_ratio, "The cosine decays to lr * this")
      ->capture_default_str();
  c->add_option("--label-smoothing", o->label_smoothing, "Label smoothing of the cross entropy")
      ->capture_default_str();
  c->add_option("--drop-path", o->drop_path, "Stochastic depth rate")->capture_default_str();
  c->add_option("--grad-clip", o->grad_clip, "Max global gradient norm (0 = off)")
      ->capture_default_str();
  c->add_flag("--no-augment", o->no_augment,
              "Train on plainly preprocessed images (no random-resized-crop / flip)");
  c->add_option("--crop-scale-min", o->crop_scale_min,
                "Smallest area fraction of the random-resized-crop augmentation")
      ->capture_default_str();
  c->add_option("--seed", o->seed, "Seed for init, data split, order and augmentation")
      ->capture_default_str();
  cli::add_threads_option(*c, o->threads);
  c->add_option("--save-every", o->save_every, "Write OUT/last every N epochs")
      ->capture_default_str();
  c->add_option("--eval-batch", o->eval_batch, "Batch size of validation")->capture_default_str();
  c->add_flag("--no-progress", o->no_progress, "No progress bar");
  c->add_option("--out", o->out,
                "Output folder: last/ and best/ model folders, train_log.jsonl, trainer/ (the "
                "checkpoint --resume continues from). Must be new or empty unless --resume or "
                "--overwrite")
      ->required();
  auto* rs = c->add_flag("--resume", o->resume,
                         "Continue the run in --out from its last saved epoch (give the same "
                         "options; bit-identical to an uninterrupted run)");
  c->add_flag("--overwrite", o->overwrite,
              "Start a new run in a used --out: last/, best/, train_log.jsonl and trainer/ are "
              "replaced as this run writes its own (the old best/ stays until this run's first "
              "epoch is saved); other files there are left alone")
      ->excludes(rs);
  c->footer(
      "Example (a small MambaOut on synthetic shapes; well under a minute on a laptop CPU):\n"
      "  mambavl train-classifier --arch mambaout --synthetic 512 --num-classes 8 --epochs 3 "
      "--out runs/mo\n"
      "  mambavl eval-classifier --model runs/mo/best --synthetic 512   # its held-out 10 %\n"
      "A used --out is refused (pass --resume to continue its run or --overwrite to replace "
      "it); leftovers of killed runs (.NAME.tmp.PID) there are removed when PID is gone.\n");
  c->callback([o, w]() {
    set_threads(o->threads);
    MVL_CHECK(!o->data.empty() || o->synthetic > 0,
              "train-classifier: give --data DIR or --synthetic N");
    MVL_CHECK(o->val_fraction >= 0 && o->val_fraction < 1, "--val-fraction must be in [0, 1), got ",
              o->val_fraction);
    MVL_CHECK(o->num_classes >= 2, "--num-classes must be >= 2, got ", o->num_classes);
    MVL_CHECK(o->image_size >= 0, "--image-size must be positive, got ", o->image_size);
    const int64_t size = o->image_size > 0 ? o->image_size : (o->data.empty() ? 32 : 224);
    // Model config first: a bad --arch is reported before any data is read.
    const int64_t expected_classes = o->data.empty() ? o->num_classes : 0;
    model_config(*o, std::max<int64_t>(expected_classes, 2), size);
    // The output folder next, before any data is read: a used one needs --resume / --overwrite.
    train::check_output_folder(o->out, o->resume ? fs::path(o->out) / "trainer" : fs::path(),
                               o->overwrite);
    if (o->resume) train::classifier_resume_checkpoint(o->out);

    std::shared_ptr<const data::ImageDataset> all;
    if (!o->data.empty())
      all = std::make_shared<data::ImageFolderDataset>(o->data);
    else
      all = std::make_shared<data::SyntheticDataset>(o->synthetic, o->num_classes, size, o->seed);
    const int64_t k = static_cast<int64_t>(all->classes().size());
    MVL_CHECK(k >= 2, (o->data.empty() ? "synthetic data" : o->data),
              ": need at least 2 classes, found ", k);
    std::shared_ptr<const data::ImageDataset> train_ds = all, val_ds;
    if (o->val_fraction > 0) {
      data::Split sp = data::split_dataset(all, o->val_fraction, o->seed);
      train_ds = sp.train;
      val_ds = sp.val;
    }
    const nlohmann::json cfg = model_config(*o, k, size);
    auto clf = models::make_classifier(cfg, o->seed, "train-classifier");
    int64_t params = 0;
    for (const auto& p : clf->module().parameters()) params += p.numel();
    std::fprintf(stderr, "model: %s, %lld parameters, %lld classes, input %lld px\n",
                 clf->arch().c_str(), static_cast<long long>(params), static_cast<long long>(k),
                 static_cast<long long>(clf->preprocess().size));
    std::fprintf(stderr, "data: %lld training images, %lld validation images\n",
                 static_cast<long long>(train_ds->size()),
                 static_cast<long long>(val_ds ? val_ds->size() : 0));

    train::TrainConfig tc;
    tc.epochs = o->epochs;
    tc.max_steps = o->steps;
    tc.batch_size = o->batch;
    tc.lr = o->lr;
    tc.weight_decay = o->weight_decay;
    tc.warmup_steps = o->warmup_steps;
    tc.warmup_epochs = o->warmup_steps > 0 ? 0 : o->warmup;
    if (w->count() == 0 && o->warmup_steps == 0)
      tc.warmup_epochs = std::min(o->warmup, 0.2 * static_cast<double>(o->epochs));
    tc.min_lr_ratio = o->min_lr_ratio;
    tc.label_smoothing = o->label_smoothing;
    tc.grad_clip = o->grad_clip;
    tc.seed = o->seed;
    tc.augment = !o->no_augment;
    tc.crop_scale_min = o->crop_scale_min;
    tc.eval_batch = o->eval_batch;
    tc.out_dir = o->out;
    tc.save_every = o->save_every;
    tc.threads = o->threads;
    tc.progress = !o->no_progress;
    tc.resume = o->resume;
    tc.overwrite = o->overwrite;
    train::TrainResult r = train::train_classifier(*clf, *train_ds, val_ds.get(), tc);
    MVL_CHECK(!r.epochs.empty(), o->out, ": the run has no epochs (nothing was trained)");
    const auto& last = r.epochs.back();
    std::cout << "trained " << r.steps << " steps, " << r.epochs.size()
              << " epochs; final train loss " << last.train_loss;
    if (last.has_val)
      std::cout << "; val top1 " << last.val_top1 << " top5 " << last.val_top5 << "; best val top1 "
                << r.best_val_top1 << " (epoch " << r.best_epoch << ")";
    std::cout << "\nsaved " << (fs::path(o->out) / "last").string() << " and "
              << (fs::path(o->out) / "best").string() << "\n";
  });
}

// ---- classify ----

void add_classify(CLI::App& app) {
  struct Opts {
    std::string model;
    std::vector<std::string> images;
    int64_t top = 5;
    int threads = 0;
  };
  auto o = std::make_shared<Opts>();
  auto* c = app.add_subcommand("classify",
                               "Print the most likely classes, with probabilities, of each image");
  c->add_option("--model", o->model,
                "Classifier folder: from train-classifier, or an official / timm MambaOut folder")
      ->required();
  c->add_option("images", o->images, "Image files (PNG / JPEG / BMP / GIF)")->required();
  c->add_option("--top", o->top, "Classes shown per image")->capture_default_str();
  c->footer(
      "Output: per image its path, then one line per class, best first: rank, class name, "
      "softmax probability.\nExample:\n  mambavl classify --model runs/mo/best cat.png dog.jpg "
      "--top 3\n");
  cli::add_threads_option(*c, o->threads);
  c->callback([o]() {
    set_threads(o->threads);
    MVL_CHECK(o->top >= 1, "--top must be >= 1, got ", o->top);
    auto clf = models::load_classifier(o->model);
    const std::vector<std::string> classes = models::classifier_classes(o->model);
    MVL_CHECK(static_cast<int64_t>(classes.size()) == clf->num_classes(),
              (fs::path(o->model) / "config.json").string(), ": ", classes.size(),
              " class names for a model with ", clf->num_classes(), " classes");
    const io::ImagePreprocess pp = clf->preprocess();
    // Every image is read before any is classified, so a bad file fails fast and alone.
    std::vector<at::Tensor> inputs;
    for (const auto& f : o->images) inputs.push_back(pp(io::load_image(f)));
    clf->module().eval();
    at::NoGradGuard no_grad;
    for (size_t i = 0; i < inputs.size(); ++i) {
      const at::Tensor probs = clf->forward(inputs[i].unsqueeze(0)).to(at::kFloat).softmax(1);
      const at::Tensor idx = eval::topk(probs, o->top);
      std::cout << o->images[i] << "\n";
      for (int64_t r = 0; r < idx.size(1); ++r) {
        const int64_t k = idx[0][r].item<int64_t>();
        std::printf("  %lld. %-24s %.4f\n", static_cast<long long>(r + 1), classes[k].c_str(),
                    probs[0][k].item<double>());
        std::fflush(stdout);
      }
    }
  });
}

// ---- eval-classifier ----

void add_eval_classifier(CLI::App& app) {
  struct Opts {
    std::string model, data;
    int64_t synthetic = 0, batch = 64;
    uint64_t seed = 0;
    double val_fraction = 0.1;
    std::string split = "val";
    int threads = 0;
    bool no_progress = false;
  };
  auto o = std::make_shared<Opts>();
  auto* c = app.add_subcommand(
      "eval-classifier",
      "Top-1 / top-5 accuracy and mean cross entropy of a classifier on an image folder or the "
      "synthetic data");
  c->add_option("--model", o->model, "Classifier folder")->required();
  auto* d = c->add_option("--data", o->data,
                          "Image folder DIR/<class>/*; class folders are matched to the model's "
                          "classes by name");
  auto* s = c->add_option("--synthetic", o->synthetic,
                          "Use N synthetic images (classes and size from the model)")
               ->check(IntRange(1, data::kMaxSyntheticSamples));
  d->excludes(s);
  c->add_option("--seed", o->seed, "Seed of the synthetic data (as given to train-classifier)")
      ->capture_default_str();
  c->add_option("--split", o->split,
                "Synthetic data: 'val' = the held-out part train-classifier made with the same "
                "--synthetic, --seed and --val-fraction (never trained on); 'all' = all N images "
                "(includes the training images)")
      ->capture_default_str();
  c->add_option("--val-fraction", o->val_fraction,
                "Synthetic data with --split val: as given to train-classifier")
      ->capture_default_str();
  c->add_option("--batch", o->batch, "Batch size")->capture_default_str();
  cli::add_threads_option(*c, o->threads);
  c->add_flag("--no-progress", o->no_progress, "No progress bar");
  c->callback([o]() {
    set_threads(o->threads);
    MVL_CHECK(!o->data.empty() || o->synthetic > 0,
              "eval-classifier: give --data DIR or --synthetic N");
    MVL_CHECK(o->split == "val" || o->split == "all", "--split must be 'val' or 'all', got '",
              o->split, "'");
    MVL_CHECK(o->split == "all" || (o->val_fraction > 0 && o->val_fraction < 1),
              "--val-fraction must be in (0, 1) with --split val, got ", o->val_fraction,
              " (use --split all to evaluate every synthetic image)");
    MVL_CHECK(o->batch >= 1, "--batch must be >= 1, got ", o->batch);
    auto clf = models::load_classifier(o->model);
    const std::vector<std::string> classes = models::classifier_classes(o->model);
    const io::ImagePreprocess pp = clf->preprocess();
    std::shared_ptr<const data::ImageDataset> ds;
    if (!o->data.empty())
      ds = std::make_shared<RelabeledDataset>(std::make_shared<data::ImageFolderDataset>(o->data),
                                              classes, o->data);
    else {
      // The same images (and, for 'val', the same split) train-classifier made from these
      // options: SyntheticDataset and split_dataset depend only on (N, classes, size, seed).
      ds = std::make_shared<data::SyntheticDataset>(o->synthetic, clf->num_classes(), pp.size,
                                                    o->seed);
      if (o->split == "val") ds = data::split_dataset(ds, o->val_fraction, o->seed).val;
    }
    eval::EvalOptions eo;
    eo.batch = o->batch;
    eo.progress = !o->no_progress;
    const eval::ClassificationMetrics m = eval::evaluate_classifier(*clf, *ds, pp, eo);
    std::printf("top1: %.4f top5: %.4f loss: %.4f n: %lld\n", m.top1, m.top5, m.loss,
                static_cast<long long>(m.count));
  });
}

}  // namespace

void add_vision_commands(CLI::App& app) {
  add_train_classifier(app);
  add_classify(app);
  add_eval_classifier(app);
}

}  // namespace mambavl::cli
