// TEMPORARY: placeholders for the per-family constructors while the families are being written
// in parallel. Each family's author deletes its block when its .cpp defines the functions; the
// file goes when both blocks are gone.
#include "common/error.h"
#include "models/vision_factories.h"

namespace mambavl::models {

// (separator: keep the two blocks apart so that deleting either merges cleanly)

// ---- ViT block (delete when models/vit.cpp defines these) ----
std::unique_ptr<ImageClassifier> make_vit_classifier(const nlohmann::json&, uint64_t,
                                                     const std::string& file) {
  MVL_FAIL(file, ": ViT is not built yet");
}
std::unique_ptr<ImageClassifier> load_vit_classifier(const std::filesystem::path& dir,
                                                     const nlohmann::json&) {
  MVL_FAIL(dir.string(), ": ViT is not built yet");
}
std::unique_ptr<VisionEncoder> load_vit_encoder(const std::filesystem::path& dir,
                                                const nlohmann::json&) {
  MVL_FAIL(dir.string(), ": ViT is not built yet");
}
// ---- end of ViT block ----

}  // namespace mambavl::models
