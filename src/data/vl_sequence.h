// Sequence assembly for vision-language models (SPEC §2.3): task prompts, the image block, the
// three prompt orders, answer-only labels, and batching.
//
// Image block for an H x W patch grid ("separator" style, Shaking-Up):
//   ###  p p ... p &&  p p ... p &&  ...  p p ... p ###        (length 1 + H * (W + 1))
// where each p is a placeholder whose input embedding the connector output replaces; the last
// row ends with ### instead of &&. With cls_patch features the class token's placeholder comes
// right after the first ###. "plain" style (VL-Mamba): the placeholders only (length H * W).
//
// Task prompts (SPEC §2.3):
//   caption   instruction "Provide a one-sentence caption for the provided image.\n"
//   vqa       instruction "Answer the question using a single word or phrase."
//             query       "\nQuestion: <q>\nAnswer: "
//   grounding instruction "Locate the region that is described by:"   query "\n<phrase>\n"
//             answer      "[x1,y1,x2,y2]." (data::format_box, 2 decimals)
//   mc        instruction "Answer with the option's letter from the given choices directly."
//             query       "\n<question with options>\nAnswer: "
// Orders: "default" = image block(s), instruction, query, answer; "instruction_first" (task-aware)
// = instruction, image block(s), query, answer; "query_first" = instruction, query, image
// block(s), answer. Each answer ends with the eos token. "chat" examples (LLaVA conversations)
// put each image block where its "<image>" marker is and supervise every gpt turn (+ eos).
// Each text piece is tokenised on its own and the ids concatenated.
// Labels: the answer tokens (and their eos) are supervised; image, instruction and query are not.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "data/vl_data.h"
#include "io/tokenizer.h"
#include "models/vlm.h"

namespace mambavl::data {

struct ImageBlockFormat {
  std::string style = "separator";  // "separator" | "plain"
  int64_t start_id = -1;            // "###" (separator style)
  int64_t row_end_id = -1;          // "&&" (separator style)
  int64_t grid_h = 0, grid_w = 0;   // the patch grid of one image
  int64_t prefix = 0;               // tokens before the grid (the class token with cls_patch)
  int64_t placeholder_id = 0;       // id written at placeholder positions (any valid id)
  int64_t length() const;           // tokens of one image block
  int64_t image_tokens() const { return prefix + grid_h * grid_w; }
};

struct SequenceFormat {
  ImageBlockFormat block;
  std::string order = "default";  // "default" | "instruction_first" | "query_first"
  std::optional<int64_t> eos_id;  // appended to every answer
  int64_t max_length = 0;         // > 0: a longer sequence is an Error (never truncated)
};

// The instruction and query texts of a structured example (empty for "chat").
struct PromptParts {
  std::string instruction, query;
};
PromptParts task_prompt(const VLExample& ex);

struct AssembledSequence {
  std::vector<int64_t> ids;     // [L]
  std::vector<int64_t> labels;  // [L]: ids[t] where supervised, -100 elsewhere
  // For each image, in order: the positions of its image_tokens() placeholders.
  std::vector<std::vector<int64_t>> image_positions;
  std::string answer;  // the (last) reference answer, for evaluation
};

// include_answer = true: the whole training sequence; false: the prompt up to where the model
// answers (structured tasks: everything but the answer; chat: every turn but the last gpt one).
// Errors (naming `what`, e.g. "data.json row 3"): an image block longer than max_length, the
// whole sequence longer than max_length, a "<image>" count that differs from ex.num_images.
AssembledSequence assemble(const VLExample& ex, const io::Tokenizer& tok, const SequenceFormat& f,
                           bool include_answer, const std::string& what = "example");

// The sequence format of a VLM (its image block ids and grid, prompt order, eos, context limit).
// `order` non-empty overrides the model's prompt_order.
SequenceFormat sequence_format(models::VLM& vlm, const std::string& order = "");

// Right-pads the sequences into one batch (ids: pad_id, labels: -100); images [n, 3, S, S] are
// every image of the batch in order (undefined when there is none).
models::VLMBatch make_vlm_batch(const std::vector<AssembledSequence>& seqs,
                                const at::Tensor& images, int64_t pad_id);

// Assembles examples `indices` of `ds` for `vlm` (images preprocessed with vlm.preprocess()).
// `prompts_only`: sequences end where the model answers (for generation use left_prompt_embeds).
struct VLMCollated {
  models::VLMBatch batch;
  std::vector<AssembledSequence> seqs;
  std::vector<VLExample> examples;
};
VLMCollated collate(const VLDataset& ds, const std::vector<int64_t>& indices, models::VLM& vlm,
                    const SequenceFormat& f, bool include_answer);

// The prompt embeddings of each sequence of a prompts-only batch ([L_i, hidden] each, image
// tokens written in), for generate::generate_batch.
std::vector<at::Tensor> prompt_embeds(models::VLM& vlm, const VLMCollated& c);

}  // namespace mambavl::data
