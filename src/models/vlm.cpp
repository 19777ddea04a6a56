#include "models/vlm.h"

#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <algorithm>
#include <type_traits>

#include "common/error.h"
#include "io/checkpoint.h"
#include "models/gpt_neox.h"
#include "models/lm_loss.h"
#include "models/mamba.h"
#include "models/registry.h"
#include "models/vit.h"

namespace mambavl::models {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

const std::vector<std::string> kConfigKeys = {"model_type",
                                              "architectures",
                                              "family",
                                              "vision_config",
                                              "connector_config",
                                              "text_config",
                                              "vision_feature_layer",
                                              "vision_feature_select_strategy",
                                              "vision_final_norm",
                                              "image_size",
                                              "image_block",
                                              "image_start_token",
                                              "image_row_end_token",
                                              "prompt_order",
                                              "torch_dtype",
                                              "transformers_version"};

bool one_of(const std::string& v, const std::vector<std::string>& options) {
  return std::find(options.begin(), options.end(), v) != options.end();
}

template <class T>
T get_as(const json& j, const char* key, const std::string& file, const char* type_name) {
  // An integer past int64 arrives as unsigned: refused, never wrapped around.
  if constexpr (std::is_same_v<T, int64_t>)
    MVL_CHECK(!j.at(key).is_number_unsigned() || j.at(key).get<uint64_t>() <= uint64_t(INT64_MAX),
              file, ": key '", key, "' = ", j.at(key).dump(), " is out of range");
  try {
    return j.at(key).get<T>();
  } catch (const json::exception&) {
    MVL_FAIL(file, ": key '", key, "' must be ", type_name);
  }
}

// A non-owning shared_ptr (the VLM owns the parts; the root module only lists them).
std::shared_ptr<torch::nn::Module> view(torch::nn::Module& m) {
  return std::shared_ptr<torch::nn::Module>(std::shared_ptr<void>(), &m);
}

}  // namespace

const std::vector<std::string>& VLMConfig::families() {
  static const std::vector<std::string> f = {"mamba-vl", "pythia-vl", "vl-mamba", "hybrid-vl"};
  return f;
}

VLMConfig VLMConfig::from_json(const json& j, const std::string& file) {
  MVL_CHECK(j.is_object(), file, ": must be a JSON object");
  for (auto it = j.begin(); it != j.end(); ++it)
    MVL_CHECK(one_of(it.key(), kConfigKeys), file, ": unknown key '", it.key(),
              "' in a vision-language model config (known: ", join(kConfigKeys), ")");
  VLMConfig c;
  for (const char* k : {"vision_config", "text_config", "connector_config"})
    MVL_CHECK(j.contains(k) && j.at(k).is_object(), file, ": key '", k,
              "' (an object) is required in a vision-language model config");
  if (j.contains("family")) c.family = get_as<std::string>(j, "family", file, "a string");
  c.vision_config = j.at("vision_config");
  c.text_config = j.at("text_config");
  c.connector = ConnectorConfig::from_json(j.at("connector_config"), file + " connector_config");
  if (j.contains("vision_feature_layer"))
    c.vision_feature_layer = get_as<int64_t>(j, "vision_feature_layer", file, "an integer");
  if (j.contains("vision_feature_select_strategy"))
    c.vision_feature_select =
        get_as<std::string>(j, "vision_feature_select_strategy", file, "a string");
  if (c.vision_feature_select == "default") c.vision_feature_select = "patch";  // LLaVA's names
  if (c.vision_feature_select == "full") c.vision_feature_select = "cls_patch";
  if (j.contains("vision_final_norm"))
    c.vision_final_norm = get_as<bool>(j, "vision_final_norm", file, "true or false");
  if (j.contains("image_size")) c.image_size = get_as<int64_t>(j, "image_size", file, "an integer");
  if (j.contains("image_block"))
    c.image_block = get_as<std::string>(j, "image_block", file, "a string");
  if (j.contains("image_start_token"))
    c.image_start_token = get_as<std::string>(j, "image_start_token", file, "a string");
  if (j.contains("image_row_end_token"))
    c.image_row_end_token = get_as<std::string>(j, "image_row_end_token", file, "a string");
  if (j.contains("prompt_order"))
    c.prompt_order = get_as<std::string>(j, "prompt_order", file, "a string");
  c.validate(file);
  return c;
}

void VLMConfig::validate(const std::string& file) const {
  MVL_CHECK(one_of(family, families()), file, ": unknown family '", family,
            "' (known: ", join(families()), ")");
  MVL_CHECK(one_of(vision_feature_select, {"patch", "cls_patch"}), file,
            ": vision_feature_select_strategy must be 'patch' or 'cls_patch', not '",
            vision_feature_select, "'");
  MVL_CHECK(one_of(image_block, {"separator", "plain"}), file,
            ": image_block must be 'separator' (### rows && ###) or 'plain', not '", image_block,
            "'");
  MVL_CHECK(one_of(prompt_order, {"default", "instruction_first", "query_first"}), file,
            ": prompt_order must be 'default', 'instruction_first' or 'query_first', not '",
            prompt_order, "'");
  MVL_CHECK(image_size >= 0 && image_size <= io::ImagePreprocess::kMaxSize, file, ": image_size ",
            image_size, " is out of range (0 = the encoder's own, up to ",
            io::ImagePreprocess::kMaxSize, ")");
  MVL_CHECK(!image_start_token.empty() && !image_row_end_token.empty(), file,
            ": image_start_token / image_row_end_token must not be empty");
  MVL_CHECK(vision_feature_select == "patch" || !connector.has_vss(), file,
            ": vision_feature_select_strategy 'cls_patch' needs the MLP connector (a VSS connector "
            "scans the patch grid, which has no place for the class token)");
}

json VLMConfig::to_json() const {
  return {{"model_type", "mambavl"},
          {"architectures", {"MambaVLForConditionalGeneration"}},
          {"family", family},
          {"vision_config", vision_config},
          {"connector_config", connector.to_json()},
          {"text_config", text_config},
          {"vision_feature_layer", vision_feature_layer},
          {"vision_feature_select_strategy", vision_feature_select},
          {"vision_final_norm", vision_final_norm},
          {"image_size", image_size},
          {"image_block", image_block},
          {"image_start_token", image_start_token},
          {"image_row_end_token", image_row_end_token},
          {"prompt_order", prompt_order}};
}

// ---------------------------------------------------------------------------------------------

VLM::VLM(VLMConfig cfg, uint64_t seed, bool initialize) : cfg_(std::move(cfg)) {
  cfg_.validate("VLM config");
  vision_ = make_vision_encoder(cfg_.vision_config, seed, initialize, "vision_config");
  connector_ = std::make_shared<ConnectorImpl>(cfg_.connector, seed + 1, initialize);
  lm_ = make_causal_lm(cfg_.text_config, seed + 2, initialize, "text_config");
  register_parts();
}

VLM::VLM(VLMConfig cfg, std::unique_ptr<VisionEncoder> vision, std::shared_ptr<ConnectorImpl> conn,
         std::unique_ptr<CausalLM> lm)
    : cfg_(std::move(cfg)),
      vision_(std::move(vision)),
      connector_(std::move(conn)),
      lm_(std::move(lm)) {
  MVL_CHECK(vision_ && connector_ && lm_, "VLM: a part is missing");
  cfg_.vision_config = vision_->config_json();
  cfg_.text_config = lm_config_json(*lm_);
  cfg_.connector = connector_->config();
  cfg_.validate("VLM config");
  register_parts();
}

void VLM::register_parts() {
  MVL_CHECK(cfg_.connector.d_vision == vision_->feature_dim(),
            "VLM config: connector d_vision = ", cfg_.connector.d_vision,
            " but the vision encoder's features have ", vision_->feature_dim(), " channels");
  MVL_CHECK(cfg_.connector.d_lm == lm_->hidden_size(),
            "VLM config: connector d_lm = ", cfg_.connector.d_lm,
            " but the language model's hidden size is ", lm_->hidden_size());
  root_ = std::make_shared<torch::nn::Module>("VLM");
  root_->register_module("vision_tower", view(vision_->module()));
  root_->register_module("multi_modal_projector",
                         std::static_pointer_cast<torch::nn::Module>(connector_));
  root_->register_module("language_model", view(lm_->module()));
  // A grid that does not fit is an error now, not at the first batch.
  const auto g = grid();
  MVL_CHECK(g[0] > 0 && g[1] > 0, "VLM config: image size ", preprocess().size,
            " gives an empty patch grid");
}

bool is_vlm_folder(const fs::path& dir) {
  const fs::path f = dir / "config.json";
  if (!fs::is_regular_file(f)) return false;
  json j;
  try {
    j = io::read_json_file(f);
  } catch (const Error&) {
    return false;
  }
  if (!j.is_object()) return false;
  if (j.contains("model_type") && j["model_type"] == "mambavl") return true;
  return j.contains("vision_config") && j.contains("text_config");
}

std::unique_ptr<VLM> VLM::load(const fs::path& dir) {
  const fs::path file = dir / "config.json";
  MVL_CHECK(fs::is_directory(dir), dir.string(), ": not a folder (expected a VLM folder)");
  MVL_CHECK(fs::exists(file), dir.string(), ": no config.json (expected a VLM folder)");
  VLMConfig cfg = VLMConfig::from_json(io::read_json_file(file), file.string());
  io::CheckpointFolder ckpt(dir);
  {
    // The parts' configs (limits, then shapes against the header) before anything is built.
    const std::string f = file.string();
    ExpectedWeights w;
    w.append(expected_vision_weights(cfg.vision_config, f + " vision_config", "vision_config."),
             "vision_tower.");
    w.append(cfg.connector.expected_weights("connector_config."), "multi_modal_projector.");
    w.append(expected_lm_weights(cfg.text_config, f + " text_config", "text_config."),
             "language_model.");
    check_weights_match_config(w, ckpt, f);
  }
  auto m = std::make_unique<VLM>(cfg, 0, /*initialize=*/false);
  m->lm_->set_context_source("text_config.max_position_embeddings in " + file.string());
  io::load_module(*m->root_, ckpt);
  if (fs::exists(dir / "tokenizer.json")) m->set_tokenizer(dir / "tokenizer.json");
  return m;
}

void VLM::save(const fs::path& dir) const {
  fs::create_directories(dir);
  io::save_module(*root_, dir);
  io::write_json_file(dir / "config.json", cfg_.to_json());
  copy_tokenizer_files(tokenizer_dir_, dir);
}

const io::Tokenizer& VLM::tokenizer() const {
  MVL_CHECK(tokenizer_, "this vision-language model has no tokenizer (its folder has no ",
            "tokenizer.json): copy the language model's tokenizer.json into the folder");
  return *tokenizer_;
}

void VLM::set_tokenizer(const fs::path& tokenizer_json) {
  tokenizer_ = io::Tokenizer::from_file(tokenizer_json);
  tokenizer_dir_ = tokenizer_json.parent_path();
  MVL_CHECK(tokenizer_->vocab_size() <= lm_->vocab_size(), tokenizer_json.string(), ": has ",
            tokenizer_->vocab_size(), " tokens but the language model's vocabulary has only ",
            lm_->vocab_size(), " rows");
  // Resolve the image-block tokens now, so a tokenizer without them is refused at load time.
  if (cfg_.image_block == "separator") {
    image_start_id();
    image_row_end_id();
  }
}

io::ImagePreprocess VLM::preprocess() const {
  io::ImagePreprocess pp = vision_->preprocess();
  if (cfg_.image_size > 0) pp.size = cfg_.image_size;
  return pp;
}

FeatureSelect VLM::feature_select() const {
  FeatureSelect s = FeatureSelect::parse(cfg_.vision_feature_layer, cfg_.vision_feature_select);
  s.final_norm = cfg_.vision_final_norm;
  return s;
}

std::array<int64_t, 2> VLM::grid() const {
  const int64_t s = preprocess().size;
  return vision_->grid_size(s, s);
}

int64_t VLM::image_tokens() const {
  const auto g = grid();
  int64_t prefix = 0;
  if (cfg_.vision_feature_select == "cls_patch") {
    // ViTs with a class token (CLIP, EVA-02); SigLIP and MambaOut have none.
    auto* vit = dynamic_cast<const ViTEncoder*>(vision_.get());
    prefix = vit ? vit->config().num_prefix() : 0;
  }
  return prefix + g[0] * g[1];
}

namespace {
int64_t single_token(const io::Tokenizer& tok, const std::string& s, const char* what) {
  auto id = tok.token_to_id(s);
  if (!id) {
    auto ids = tok.encode(s);
    MVL_CHECK(ids.size() == 1, tok.origin(), ": the ", what, " '", s,
              "' is not a single token of this tokenizer (it encodes to ", ids.size(),
              " tokens): choose another string in the VLM config or use a tokenizer that has it");
    id = ids[0];
  }
  return *id;
}
}  // namespace

int64_t VLM::image_start_id() const {
  return single_token(tokenizer(), cfg_.image_start_token, "image start token");
}
int64_t VLM::image_row_end_id() const {
  return single_token(tokenizer(), cfg_.image_row_end_token, "image row end token");
}
std::optional<int64_t> VLM::eos_id() const {
  if (!tokenizer_) return std::nullopt;
  if (auto e = tokenizer_->eos_id()) return e;
  return tokenizer_->token_to_id("<|endoftext|>");
}

at::Tensor VLM::encode_images(const at::Tensor& images) {
  MVL_CHECK(images.dim() == 4 && images.size(1) == 3, "VLM: images must be [n, 3, H, W], got ",
            images.sizes());
  bool trainable = false;
  for (const auto& p : vision_->module().parameters()) trainable = trainable || p.requires_grad();
  at::Tensor tokens;
  int64_t gh = 0, gw = 0, prefix = 0;
  {
    std::optional<at::NoGradGuard> ng;
    if (!trainable) ng.emplace();
    at::ScalarType vdt = at::kFloat;
    for (const auto& p : vision_->module().parameters()) {
      if (p.dim() > 1) {
        vdt = p.scalar_type();
        break;
      }
    }
    VisionFeatures f = vision_->encode(images.to(vdt), feature_select());
    tokens = f.tokens;  // [n, P + gh*gw, C]
    gh = f.grid_h, gw = f.grid_w, prefix = f.num_prefix;
  }
  at::ScalarType cdt = at::kFloat;
  for (const auto& p : connector_->parameters()) {
    if (p.dim() > 1) {
      cdt = p.scalar_type();
      break;
    }
  }
  tokens = tokens.to(cdt);
  at::Tensor out;
  if (prefix == 0)
    out = connector_->forward(tokens, gh, gw);  // [n, gh*gw, hidden]
  else  // cls_patch (MLP connector only, token-wise): the prefix tokens lead the sequence
    out = connector_->forward(tokens, 1, tokens.size(1));
  return out.to(lm_->dtype());
}

at::Tensor VLM::embed(const VLMBatch& b) {
  MVL_CHECK(b.ids.defined() && b.ids.dim() == 2, "VLM batch: ids must be [B, L]");
  at::Tensor e = lm_->embed(b.ids);  // [B, L, H]
  if (!b.images.defined() || b.images.size(0) == 0) return e;
  MVL_CHECK(
      b.image_pos.defined() && b.image_pos.dim() == 2 && b.image_pos.size(0) == b.images.size(0),
      "VLM batch: image_pos must be [n_images, T] with one row per image");
  const int64_t B = e.size(0), L = e.size(1), H = e.size(2);
  at::Tensor feats = encode_images(b.images);  // [n, T, H]
  MVL_CHECK(feats.size(1) == b.image_pos.size(1), "VLM batch: each image gives ", feats.size(1),
            " tokens but the sequence has ", b.image_pos.size(1), " places for it");
  at::Tensor flat = e.reshape({B * L, H});
  flat = flat.index_put({b.image_pos.reshape({-1})}, feats.reshape({-1, H}).to(flat.dtype()));
  return flat.view({B, L, H});
}

at::Tensor VLM::logits(const VLMBatch& b) { return lm_->forward_embeds(embed(b)); }

LMLoss VLM::loss(const VLMBatch& b) {
  MVL_CHECK(b.labels.defined() && b.labels.sizes() == b.ids.sizes(),
            "VLM batch: labels must have the shape of ids");
  return lm_loss(*lm_, lm_->forward_hidden(embed(b)), b.labels);
}

void VLM::to_dtype(at::ScalarType dtype) {
  vision_->to_dtype(dtype);
  lm_->to_dtype(dtype);
  at::NoGradGuard ng;
  for (auto& p : connector_->named_parameters()) {
    const bool keep = p.key().ends_with("A_log") || p.key().ends_with(".D");
    const at::ScalarType t = keep ? at::kFloat : dtype;
    if (p.value().scalar_type() != t) p.value().set_data(p.value().to(t));
  }
}

int64_t VLM::num_parameters() const {
  int64_t n = 0;
  for (const auto& p : root_->parameters()) n += p.numel();
  return n;
}

json VLM::describe() const {
  auto count = [](torch::nn::Module& m) {
    int64_t n = 0;
    for (const auto& p : m.parameters()) n += p.numel();
    return n;
  };
  const auto g = grid();
  json j = {{"kind", "vision-language model"},
            {"family", cfg_.family},
            {"vision",
             {{"arch", vision_->arch()},
              {"feature_dim", vision_->feature_dim()},
              {"image_size", preprocess().size},
              {"grid", {g[0], g[1]}},
              {"parameters", count(vision_->module())}}},
            {"connector",
             {{"type", cfg_.connector.type},
              {"scan", cfg_.connector.has_vss() ? cfg_.connector.scan : "-"},
              {"parameters", count(*connector_)}}},
            {"language_model",
             {{"arch", lm_->arch()},
              {"layers", lm_->num_layers()},
              {"hidden", lm_->hidden_size()},
              {"vocab", lm_->vocab_size()},
              {"parameters", count(lm_->module())}}},
            {"image_block", cfg_.image_block},
            {"image_tokens", image_tokens()},
            {"prompt_order", cfg_.prompt_order},
            {"parameters", num_parameters()}};
  return j;
}

}  // namespace mambavl::models
