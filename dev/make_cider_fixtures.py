#!/usr/bin/env python3
"""Writes tests/fixtures/metrics/cider.json: CIDEr-D golden values from pycocoevalcap for
tests/test_vl_metrics.cpp.

The reference is pycocoevalcap 1.2's `Cider` scorer (pycocoevalcap/cider/cider.py +
cider_scorer.py: CIDEr-D with n = 1..4, sigma = 6, clipping, length penalty, x10, document
frequencies from the references of the evaluated set). It is pure Python and is called here
unchanged.

pycocoevalcap's usual pipeline first runs its PTBTokenizer, which needs Java (Stanford CoreNLP
3.4.1). It is NOT used. Instead `coco_tokenize` below is a Python copy of the C++
`mambavl::eval::coco_tokenize` (src/eval/vl_metrics.h documents the rules and where they differ
from CoreNLP), and the Cider scorer gets its output joined by spaces: exactly the "tokenized
sentence" strings the scorer expects. So the fixture verifies the CIDEr-D arithmetic against the
reference; the tokenizer's agreement with CoreNLP is not verified (no Java here). The fixture also
stores this script's tokens of every text, and the C++ test checks that its tokenizer gives the
same tokens (a consistency check between the two copies, not a reference).

Usage (dev only):
    python3 -m venv .venv-dev && .venv-dev/bin/pip install pycocoevalcap==1.2
    .venv-dev/bin/python dev/make_cider_fixtures.py
Made with Python 3.11, pycocoevalcap 1.2, numpy 2.4.6. A second run rewrites identical bytes.
"""
import json
import pathlib

import pycocoevalcap
from pycocoevalcap.cider.cider import Cider

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests/fixtures/metrics/cider.json"

# ---- coco_tokenize: a copy of src/eval/vl_metrics.cpp (keep the two in step) ----
SPACE = set(" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f")  # Python's isspace() on ASCII
DROP = set('.,?!:;"`()[]{}')
SPLIT = set("$%#")
DIGITS = set("0123456789")
ALPHA = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
CLITICS = {"s", "re", "ve", "ll", "d", "m"}


def tok_word(c):
    return c != "" and c not in SPACE and c not in DROP and c not in SPLIT and c not in "'-"


def tokenize_chunk(w, out):
    cur = []

    def flush():
        if cur:
            out.append("".join(cur))
            cur.clear()

    n = len(w)
    i = 0
    while i < n:
        c = w[i]
        prev = w[i - 1] if i > 0 else ""
        nxt = w[i + 1] if i + 1 < n else ""
        if c in ".,:" and prev in DIGITS and prev != "" and nxt in DIGITS and nxt != "":
            cur.append(c)
        elif c == "-":
            if tok_word(prev) and tok_word(nxt):
                cur.append(c)
            else:
                flush()
        elif c == "'":
            k = i + 1
            while k < n and w[k] in ALPHA:
                k += 1
            suffix = w[i + 1:k]
            at_end = k == n or not tok_word(w[k])
            if at_end and cur and suffix in CLITICS:
                flush()
                out.append("'" + suffix)
                i = k
                continue
            if at_end and suffix == "t" and len(cur) >= 2 and cur[-1] == "n":
                cur.pop()
                flush()
                out.append("n't")
                i = k
                continue
            if prev != "" and prev in ALPHA and nxt != "" and nxt in ALPHA:
                cur.append(c)
            else:
                flush()
        elif c in SPLIT:
            flush()
            out.append(c)
        elif c in DROP:
            flush()
        else:
            cur.append(c)
        i += 1
    flush()


def coco_tokenize(text):
    lower = "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in text)
    out = []
    chunk = []
    for c in lower + " ":
        if c in SPACE:
            if chunk:
                tokenize_chunk("".join(chunk), out)
            chunk = []
        else:
            chunk.append(c)
    return out


# ---- samples: (references, candidate) ----
MAIN = [
    (["A red circle above a blue square.", "a red circle is above the blue square",
      "Red circle over a blue square."], "a red circle above a blue square"),
    (["two green triangles on the left", "Two green triangles to the left of a yellow star."],
     "two green triangles"),
    (["a small yellow star"], "a small yellow star"),  # identical to its only reference
    (["a big purple square in the middle", "a purple square at the center",
      "the large purple square is in the center of the image", "a purple box",
      "one purple square"], "a purple square in the center"),
    (["three blue circles and a red square", "3 blue circles, 1 red square"],
     "three three three blue blue circles circles"),  # repeated words (clipping)
    (["an orange triangle below a white circle", "a white circle above an orange triangle"], ""),
    (["a black square", "black square on white background"], "..."),  # empty after tokenising
    (["a cyan star on the right"], "star"),  # one word: 0 bigrams
    (["a red square", "red square", "a square that is red"],
     "a red square a red square a red square a red square a red square"),  # long, repetitive
    (["It's a dog's toy.", "the dog's toy is red", "a red toy that's the dog's"],
     "it's the dog's red toy"),
    (["Don't touch the blue-green cube!", "do not touch the blue-green cube"],
     "don't touch the blue green cube"),
    (["The price is $3.50 (about 50% off).", "it costs 3.50 dollars"],
     "the price is $3.50"),
    (["At 10:30, 1,000 people came.", "a thousand people came at 10:30"],
     "1,000 people came at 10:30"),
    (["a GREEN circle", "A Green Circle."], "A green CIRCLE"),
    (["a yellow triangle to the right of a red circle", "red circle, yellow triangle"],
     "a red circle to the left of a yellow triangle"),  # same words, other order
    (["two squares", "a pair of squares", "2 squares"], "two circles"),
    (["a blue circle", "blue circle", "the blue circle", "one blue circle"],
     "a red square"),  # no overlap
    (["purple star in the top left corner", "a purple star at the top-left"],
     "purple star top left"),
    (["a white square and a black square side by side", "two squares, one white, one black"],
     "a white square next to a black square"),
    (["small red circle", "tiny red circle", "a little red dot"], "a small red circle"),
    (["four orange stars arranged in a row", "a row of four orange stars"],
     "four orange stars in a row"),
    (["a green square inside a blue circle"], "a blue circle with a green square inside it"),
    (["the circle is red", "red"], "red"),
    (["o'clock shapes: a clock-like circle", "a circle like a clock"], "a clock like circle"),
    (["a red circle above a blue square."], "a red circle above a blue square"),  # shares n-grams
    (["a yellow star and a yellow star and a yellow star"], "a yellow star"),
    (["a   red\tcircle\nwith  spaces", "red circle"], "  red   circle  "),
    (["nothing here", "an empty canvas", "a blank image"], "an empty image"),
    (["a very very very long caption about a big red circle in the upper right part of the "
      "canvas next to a small green triangle and a blue square", "a red circle"],
     "a big red circle in the upper right next to a small green triangle"),
    (["blue (dark) square [left]", "a dark blue square on the left"], "dark blue square left"),
]

EDGE_SETS = {
    # A single sample: idf = log(1) - log(1) = 0 for every reference n-gram, the score is 0.
    "single": [(["a red circle", "red circle"], "a red circle")],
    # Two samples whose references share "a" (df = 2 = N: weight 0).
    "two": [(["a red circle"], "a red circle"), (["a blue square", "blue square"], "a square")],
    # Empty references next to normal ones.
    "empty_refs": [(["", "a red circle"], "a red circle"), (["a blue square"], ""),
                   (["...", "green"], "green star")],
}


def score(samples):
    gts = {}
    res = {}
    toks = []
    for i, (refs, cand) in enumerate(samples):
        rt = [coco_tokenize(r) for r in refs]
        ct = coco_tokenize(cand)
        gts[i] = [" ".join(t) for t in rt]
        res[i] = [" ".join(ct)]
        toks.append({"refs": rt, "cand": ct})
    corpus, per = Cider().compute_score(gts, res)
    return {
        "refs": [list(r) for r, _ in samples],
        "cands": [c for _, c in samples],
        "tokens": toks,
        "corpus": float(corpus),
        "per_sample": [float(x) for x in per],
    }


def main():
    sets = {"main": score(MAIN)}
    for name, samples in EDGE_SETS.items():
        sets[name] = score(samples)
    doc = {
        "source": "pycocoevalcap %s Cider (n=4, sigma=6) on texts tokenised by this script's "
                  "coco_tokenize (a copy of the C++ one); PTBTokenizer (Java) not used"
                  % getattr(pycocoevalcap, "__version__", "1.2"),
        "sets": sets,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    for name, s in sets.items():
        print(f"{name}: {len(s['cands'])} samples, corpus CIDEr-D {s['corpus']:.6f}")


if __name__ == "__main__":
    main()
