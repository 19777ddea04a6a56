// libFuzzer harness: tokenizer.json loading, then encode / decode. The input is split at its first
// 0 byte: before it the tokenizer.json text, after it the text to encode (no 0 byte: a fixed
// text). Both encodes (with and without the post-processor's template) run; their ids must be
// token ids and decode must take them back; decode also gets ids made from the text's bytes
// (arbitrary, maybe out of range: skipped, as Hugging Face does).
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_util.h"
#include "io/tokenizer.h"

using namespace mambavl;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view all(reinterpret_cast<const char*>(data), size);
  const size_t zero = all.find('\0');
  const std::string_view json = all.substr(0, zero);
  const std::string_view text = zero == std::string_view::npos
                                    ? std::string_view("Hello world! <|endoftext|> ÅÄÖ 12 3.5")
                                    : all.substr(zero + 1);

  fuzz::expect_ok_or_error([&] {
    const io::Tokenizer tok = io::Tokenizer::from_json_string(json, "fuzz tokenizer.json");
    const int64_t vocab = tok.vocab_size();
    if (vocab < 0) std::abort();
    for (bool special : {false, true}) {
      fuzz::expect_ok_or_error([&] {
        const std::vector<int64_t> ids = tok.encode(text, special);
        for (int64_t id : ids) {
          if (id < 0 || id >= vocab) std::abort();  // encode gave an id that is no token
          (void)tok.id_to_token(id);
          (void)tok.is_special(id);
        }
        (void)tok.decode(ids, false);
        (void)tok.decode(ids, true);
      });
    }
    std::vector<int64_t> raw;
    for (size_t i = 0; i + 2 <= text.size() && raw.size() < 256; i += 2) {
      uint16_t v;
      std::memcpy(&v, text.data() + i, 2);
      raw.push_back(static_cast<int64_t>(v) - 16);  // a few negative ids too
    }
    (void)tok.decode(raw, false);
    (void)tok.decode(raw, true);
    (void)tok.token_to_id(text);
    for (auto id : {tok.bos_id(), tok.eos_id(), tok.unk_id()})
      if (id) (void)tok.id_to_token(*id);
  });
  return 0;
}
