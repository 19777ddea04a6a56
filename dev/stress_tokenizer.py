#!/usr/bin/env python3
"""Randomised comparison of the C++ tokenizer with Hugging Face `tokenizers` (dev-time only).

    .venv-dev/bin/python dev/stress_tokenizer.py PATH/tokenizer.json [SEED] [TEXT_FILE...]

Builds dev/tokenizer_compare_main.cpp with g++ (into /tmp), then encodes 4000 random strings
(mixed scripts, combining marks, Hangul jamo, emoji/ZWJ, unusual whitespace, <|endoftext|>, space
runs) plus the lines of any TEXT_FILEs, and decodes 3000 random id lists (including ids past the
vocabulary), with both, and reports how many agree.
"""
import json, os, random, subprocess, sys
from tokenizers import Tokenizer
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXE = "/tmp/mambavl_tokenizer_compare"
subprocess.run(["g++", "-std=c++20", "-O2", "-I" + os.path.join(ROOT, "src"),
                os.path.join(ROOT, "dev", "tokenizer_compare_main.cpp"),
                os.path.join(ROOT, "src", "io", "tokenizer.cpp"),
                os.path.join(ROOT, "src", "io", "unicode_tables.cpp"), "-o", EXE], check=True)
path = sys.argv[1]
tok = Tokenizer.from_file(path)
rng = random.Random(int(sys.argv[2]) if len(sys.argv) > 2 else 0)
pools = ["abcdefghijklmnopqrstuvwxyz ABC XYZ 0123456789", " \t\n  \r\u00a0\u3000\u2028\u0085\u000b\u000c\u001c",
  ".,;:!?'\"-()[]{}<>/\\@#$%^&*_+=~`|'s 't 're", "\u0300\u0301\u0302\u0308\u0323\u0327\u0331\u0345\u05b0\u0591\u093c\u094d\u3099\u309a\u0f71\u0f72\u0f80\u1dfa\u0898",
  "éñüßøåçÆŒĳǅǈǋ한국어日本語中文ひらがなカタカナ\u0958\u2126\u212b\u0344\u0f73", "\u1100\u1101\u1161\u1162\u11a8\u11a9\uac00\uac01\u1112", "🦙👍🏽👨‍👩‍👧❤️🇯🇵\u200d\ufe0f",
  "αβγδεζηθ абвгдежз אבגד ابتث ไทย हिन्दी", "\U00011935\U00011930\U00016FF0\u0C3C\u1AC0\U0001E130"]
texts = []
for _ in range(4000):
    n = rng.randint(0, 80); s = []
    for _ in range(n):
        s.append(rng.choice(rng.choice(pools)))
        if rng.random() < 0.01: s.append("<|endoftext|>")
        if rng.random() < 0.02: s.append(" " * rng.randint(2, 30))
    texts.append("".join(s))
for f in sys.argv[3:]:
    texts += open(f, encoding="utf-8").read().split("\n")
V = tok.get_vocab_size()
ids = [[rng.randrange(V + 5) for _ in range(rng.randint(0, 15))] for _ in range(3000)]
json.dump({"texts": texts, "ids": ids}, open('/tmp/mambavl_stress_in.json', 'w'))
out = json.loads(subprocess.run([EXE, path, '/tmp/mambavl_stress_in.json'], capture_output=True, check=True).stdout)
bad = 0
for t, mine in zip(texts, out["enc"]):
    ref = tok.encode(t, add_special_tokens=False).ids
    if ref != mine:
        bad += 1
        if bad <= 5: print("ENC MISMATCH", repr(t), ref, mine)
badd = 0
for i, mine in zip(ids, out["dec"]):
    ref = tok.decode(i, skip_special_tokens=False)
    if ref != mine:
        badd += 1
        if badd <= 5: print("DEC MISMATCH", i, repr(ref), repr(mine))
print(f"{path}: encode {len(texts)-bad}/{len(texts)} equal; decode {len(ids)-badd}/{len(ids)} equal")
