#!/usr/bin/env python3
"""Builds the tokenizer test fixtures with Hugging Face `tokenizers` (dev-time only).

    .venv-dev/bin/python dev/make_tokenizer_fixtures.py

Writes tests/fixtures/tokenizer/:
  bpe-small/tokenizer.json        byte-level BPE (GPT-NeoX-20B's settings: NFC, ByteLevel with
                                  add_prefix_space false, use_regex true), vocab 2000, trained on
                                  local Python licence / stdlib text; extra added tokens exercise
                                  lstrip / rstrip / single_word / normalized
  bpe-prefix/tokenizer.json       the same model with ByteLevel add_prefix_space true
  wordlevel/tokenizer.json        WordLevel + Whitespace pre-tokenizer, [UNK], template
                                  "[BOS] $A [EOS]"
  wordlevel-split/tokenizer.json  WordLevel + WhitespaceSplit, no post-processor
  texts.json                      the test texts
  expected-<name>.json            what `tokenizers` gives for each text, plus decode cases
  expected-neox.json              the same for the real GPT-NeoX-20B tokenizer in ../shared
                                  (read at dev time only; only the expected ids are committed)
"""
import glob
import json
import os
import random
import sys
import sysconfig

from tokenizers import (AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers,
                        processors, trainers)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "tokenizer")
# The shared folder next to the repository; MAMBAVL_SHARED_DIR overrides it (e.g. in a worktree).
SHARED = os.environ.get("MAMBAVL_SHARED_DIR", os.path.join(ROOT, "..", "shared"))
NEOX = os.path.join(SHARED, "tokenizers", "gpt-neox-20b", "tokenizer.json")


def corpus():
    """Local text: Python's licence and the docstrings/comments of some stdlib modules."""
    stdlib = sysconfig.get_paths()["stdlib"]
    files = [os.path.join(stdlib, "LICENSE.txt")]
    files += sorted(glob.glob(os.path.join(stdlib, "*.py")))[:120]
    lines = []
    for f in files:
        if os.path.exists(f):
            with open(f, encoding="utf-8", errors="replace") as fh:
                lines.extend(fh.read().splitlines())
    lines += [
        "Ünïcödé tëxt: naïve café, façade, jalapeño, Führer, São Paulo, Ångström.",
        "Русский текст и немного български. Ελληνικά γράμματα. עברית. العربية.",
        "日本語のテキストと中文文本，还有한국어 문장.",
        "Emoji: 🦙 👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️",
    ] * 20
    return lines


def texts():
    t = [
        "",
        "Hello world",
        " Hello world",
        "Hello, world! How's it going? I'm fine, they're here, we've gone, you'll see, he'd go.",
        "It'S ALL CAPS'LL 'RE 'Ve 'x '' ''s",
        "Numbers: 0 1 12 123 1234 12345 3.14159 1,000,000 1e-10 -42 +7 ½ ² ٣ ⅷ",
        "Punctuation runs: ... !!! ??? --- ((( ))) [[[]]] {}{} <<>> @#$%^&*() ~`|\\/ ;;; :::",
        "multiple   spaces    here     and      there",
        "line one\nline two\n\nline four\n\n\n\nline eight",
        "\ttabs\tand\t\ttwo tabs\t \t mixed \t\n",
        "   leading spaces",
        "trailing spaces   ",
        "  both  ",
        " ",
        "  ",
        "\n",
        "\r\n\r\n windows line ends \r\n",
        "a" + " " * 25 + "b",
        "    Hello",
        " " * 60,
        "Accents: café naïve résumé über Ærøskøbing Łódź Dvořák",
        "NFD input: cafe\u0301 nai\u0308ve re\u0301sume\u0301 A\u030a",
        "Combining marks: a\u0300\u0301\u0302\u0303 e\u0327\u0301 o\u031b\u0323 \u0301start",
        "Stacked: q\u0307\u0323 s\u0323\u0307 d\u0307\u0323 \u1e0b\u0323",
        "Hangul: 한국어 \u1100\u1161\u11a8 \u1112\u1161\u11ab\u1100\u1173\u11af",
        "CJK: 日本語のテキスト。中文文本，汉字！漢字。",
        "Emoji: 🦙 👍 👍🏽 🇫🇷🇩🇪 ❤️ ☺️",
        "ZWJ: 👨‍👩‍👧‍👦 👩‍💻 🏳️‍🌈 🧑🏾‍🚀",
        "a<|endoftext|>b",
        "<|endoftext|>",
        "<|endoftext|><|endoftext|> <|endoftext|> x<|padding|>y",
        "text <|endoftext|> more text<|endoftext|>",
        "partial <|endoftext| and <|endof",
        "[BOS] hello [EOS] [PAD] [UNK]",
        "contractions: it's don't they're we've I'm we'll he'd",
        "Supercalifragilisticexpialidocious" * 8,
        "x" * 3000,
        "ab" * 700 + " " + "0123456789" * 50,
        "mixed123abc456 def_ghi-jkl.mno/pqr\\stu",
        "Ελληνικά, русский, עברית, العربية, हिन्दी, ไทย",
        "\u00a0nbsp\u00a0\u2003em space\u3000ideographic\u2028line sep\u0085nel",
        "\u200bzero\u200cwidth\u200djoiner\ufeffbom",
        "math: ∀x∈ℝ, x²≥0 ∑ ∫ √ ∞ ≈ ≠",
        "def f(x):\n    return x * 2  # comment\n\n\nclass A:\n\tpass\n",
        "url: https://example.com/path?q=1&r=two#frag",
        "Ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３",
        "ﬁ ligature ﬀ Å Ω K",  # compatibility chars NFC leaves; singletons NFC changes
        "<mask> masked <mask>word",
        "word[SW] [SW] [SW]word",
        "before <R>   after <R>x",
        " <L>left  <L> x",
        "tail space <|endoftext|>   ",
    ]
    rng = random.Random(1234)
    pools = [
        "abcdefghijklmnopqrstuvwxyzABCXYZ0123456789",
        " \t\n  \r\u00a0\u3000",
        ".,;:!?'\"-()[]{}<>/\\@#$%^&*_+=~`|",
        "\u0300\u0301\u0302\u0308\u0323\u0327\u0331\u0345\u05b0\u0591\u093c\u094d\u3099\u309a",
        "éñüßøåçÆŒĳǅǈǋ한국어日本語中文ひらがなカタカナ",
        "\u1100\u1101\u1161\u1162\u11a8\u11a9\uac00\uac01",
        "🦙👍🏽👨‍👩‍👧❤️🇯🇵",
        "αβγδεζηθ абвгдежз אבגד ابتث",
    ]
    for _ in range(40):
        n = rng.randint(1, 60)
        s = []
        for _ in range(n):
            pool = rng.choice(pools)
            s.append(rng.choice(pool))
        if rng.random() < 0.2:
            s.insert(rng.randint(0, len(s)), "<|endoftext|>")
        t.append("".join(s))
    return t


def decode_cases(tok, rng, n=60):
    size = tok.get_vocab_size()
    cases = []
    for i in range(n):
        k = rng.randint(0, 12)
        ids = [rng.randrange(size) for _ in range(k)]
        if i % 3 == 0:  # include special / added ids
            ids += [0, 1] if size > 2 else []
            rng.shuffle(ids)
        cases.append(ids)
    return cases


def expected(tok, txts, rng):
    out = {"encode": [], "decode": []}
    for s in txts:
        ids = tok.encode(s, add_special_tokens=False).ids
        ids_sp = tok.encode(s, add_special_tokens=True).ids
        out["encode"].append({
            "ids": ids,
            "ids_with_special": ids_sp,
            "decoded": tok.decode(ids, skip_special_tokens=False),
            "decoded_skip_special": tok.decode(ids, skip_special_tokens=True),
        })
    for ids in decode_cases(tok, rng):
        out["decode"].append({
            "ids": ids,
            "text": tok.decode(ids, skip_special_tokens=False),
            "text_skip_special": tok.decode(ids, skip_special_tokens=True),
        })
    return out


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)
        f.write("\n")


def make_bpe():
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True,
                                                 use_regex=True)
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=True,
                                              use_regex=True)
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    trainer = trainers.BpeTrainer(vocab_size=2000, min_frequency=2, show_progress=False,
                                  special_tokens=["<|endoftext|>", "<|padding|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(), trainer=trainer)
    tok.add_tokens([
        AddedToken("  ", normalized=True),
        AddedToken("   ", normalized=True),
        AddedToken("<mask>", lstrip=True, special=True, normalized=False),
        AddedToken("[SW]", single_word=True, normalized=False),
        AddedToken("<R>", rstrip=True, normalized=False),
        AddedToken("<L>", lstrip=True, normalized=True),
        AddedToken("Å", normalized=True),  # NFC of "Å" (angstrom sign) is "Å"
    ])
    return tok


def make_wordlevel(pre, template):
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre
    trainer = trainers.WordLevelTrainer(vocab_size=600, show_progress=False,
                                        special_tokens=["[UNK]", "[BOS]", "[EOS]", "[PAD]"])
    tok.train_from_iterator(corpus(), trainer=trainer)
    if template:
        tok.post_processor = processors.TemplateProcessing(
            single="[BOS] $A [EOS]",
            special_tokens=[("[BOS]", tok.token_to_id("[BOS]")),
                            ("[EOS]", tok.token_to_id("[EOS]"))])
    return tok


def save(tok, name):
    os.makedirs(os.path.join(OUT, name), exist_ok=True)
    tok.save(os.path.join(OUT, name, "tokenizer.json"))


def main():
    txts = texts()
    write_json(os.path.join(OUT, "texts.json"), txts)
    rng = random.Random(99)
    bpe = make_bpe()
    save(bpe, "bpe-small")
    j = json.loads(bpe.to_str())
    j["pre_tokenizer"]["add_prefix_space"] = True
    prefix = Tokenizer.from_str(json.dumps(j))
    save(prefix, "bpe-prefix")
    wl = make_wordlevel(pre_tokenizers.Whitespace(), True)
    save(wl, "wordlevel")
    wls = make_wordlevel(pre_tokenizers.WhitespaceSplit(), False)
    save(wls, "wordlevel-split")
    for name, tok in [("bpe-small", bpe), ("bpe-prefix", prefix), ("wordlevel", wl),
                      ("wordlevel-split", wls)]:
        write_json(os.path.join(OUT, f"expected-{name}.json"), expected(tok, txts, rng))
    if os.path.exists(NEOX):
        neox = Tokenizer.from_file(NEOX)
        write_json(os.path.join(OUT, "expected-neox.json"), expected(neox, txts, rng))
    else:
        sys.exit(f"{NEOX} not found: expected-neox.json not written")


if __name__ == "__main__":
    main()
