// Per-family constructors behind the registry in vision.h (make_classifier, load_classifier,
// load_vision_encoder). Each family implements its own in its .cpp; `cfg` is the parsed
// config.json (with "classes" removed), `file` names it in errors.
#pragma once
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "models/vision.h"

namespace mambavl::models {

// MambaOut (models/mambaout.cpp): "architecture" "mambaout" / "mambaout_ssm" (our folders), or
// timm's "mambaout_femto" ... "mambaout_base" (hub folders with official or timm keys).
std::unique_ptr<ImageClassifier> make_mambaout_classifier(const nlohmann::json& cfg, uint64_t seed,
                                                          const std::string& file);
std::unique_ptr<ImageClassifier> load_mambaout_classifier(const std::filesystem::path& dir,
                                                          const nlohmann::json& cfg);
std::unique_ptr<VisionEncoder> load_mambaout_encoder(const std::filesystem::path& dir,
                                                     const nlohmann::json& cfg);
std::unique_ptr<VisionEncoder> make_mambaout_encoder(const nlohmann::json& cfg, uint64_t seed,
                                                     bool initialize, const std::string& file);

// ViT (models/vit.cpp): "architecture" "vit" classifier folders; encoders from Hugging Face
// CLIP / SigLIP ("model_type") and timm EVA-02 ("architecture": "eva02_...") folders.
std::unique_ptr<ImageClassifier> make_vit_classifier(const nlohmann::json& cfg, uint64_t seed,
                                                     const std::string& file);
std::unique_ptr<ImageClassifier> load_vit_classifier(const std::filesystem::path& dir,
                                                     const nlohmann::json& cfg);
std::unique_ptr<VisionEncoder> load_vit_encoder(const std::filesystem::path& dir,
                                                const nlohmann::json& cfg);
std::unique_ptr<VisionEncoder> make_vit_encoder(const nlohmann::json& cfg, uint64_t seed,
                                                bool initialize, const std::string& file);

}  // namespace mambavl::models
