// `mambavl encode` (features of images from a vision encoder folder) and the folder-kind dispatch
// behind `mambavl info`.
#pragma once
#include <CLI/CLI.hpp>
#include <filesystem>
#include <iosfwd>
#include <string>

namespace mambavl::cli {

// What a model folder holds, decided from its config.json alone (nothing else is read):
//   VisionEncoder  Hugging Face model_type clip_vision_model / siglip_vision_model / clip / siglip,
//                  a timm hub config ("architecture" such as eva02_*), or a MambaOut folder
//                  without a classifier (num_classes 0, timm's encoder-only export)
//   Classifier     "architecture" "vit", or mambaout* with num_classes other than 0 (absent
//                  means MambaOut's default 1000); a MambaOut classifier is also a valid `encode`
//                  folder: its trunk is the encoder
//   LanguageModel  anything else, including a folder without a readable config.json (the LM
//                  loader then reports what is wrong, as before)
// New folder kinds (VLM) are added here and in describe_folder / the encode command.
enum class FolderKind { LanguageModel, VisionEncoder, Classifier };
FolderKind detect_folder_kind(const std::filesystem::path& dir);
std::string to_string(FolderKind kind);  // "language model", "vision encoder", "image classifier"

// `info` for every folder kind but language models: loads the folder and prints "key: value"
// lines to `out` (kind, architecture, feature dim or classes, input size and preprocessing,
// patch grid, parameters) and returns true; returns false without printing for a language-model
// folder, which `info` describes itself. Errors (mambavl::Error) name the folder or file.
bool describe_folder(const std::filesystem::path& dir, std::ostream& out);

// Registers `encode`: mambavl encode --model DIR [--layer K] [--feature patch|cls_patch]
// [--final-norm] [--causal] [--image-size S] IMAGE... [--out F.safetensors] [--threads N]
// [--dtype f32|bf16]. Prints, per image, the feature shape [tokens, dim], the patch grid and
// mean / std / min / max; --out writes one float32 tensor "features" [images, tokens, dim]
// (safetensors, atomic; metadata: model, layer, feature, final_norm, causal, image_size, grid,
// num_prefix, images as a JSON list).
void add_encode_command(CLI::App& app);

}  // namespace mambavl::cli
