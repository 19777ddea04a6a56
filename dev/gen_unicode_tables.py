#!/usr/bin/env python3
"""Generates src/io/unicode_tables.cpp: the Unicode data the tokenizer needs (dev-time only).

    .venv-dev/bin/python dev/gen_unicode_tables.py

Sources:
  * Python's `unicodedata` for the NFC data (canonical combining class, one-step canonical
    decompositions, composition pairs).
  * Hugging Face `tokenizers` (the reference we must match) for the character classes its
    regex engine (Oniguruma) uses: \\p{L}, \\p{N}, \\s, and \\w / \\s of the `Whitespace`
    pre-tokenizer and the whitespace of `WhitespaceSplit`. Python's unicodedata (Unicode 14 in
    Python 3.11) is older than the engine's tables, so the classes are read from the engine; the
    script prints how they differ from unicodedata. NFC data from unicodedata is cross-checked
    against the engine's NFD/NFC on every code point; the engine wins on any difference.
"""
import os
import sys
import unicodedata as ud

from tokenizers import Regex, normalizers, pre_tokenizers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "src", "io", "unicode_tables.cpp")

CPS = [c for c in range(0x110000) if not (0xD800 <= c < 0xE000)]
ALL = "".join(map(chr, CPS))


def covered(pieces):
    """Code points covered by (piece, (start, end)) char offsets into ALL-like strings."""
    out = set()
    for _, (a, b) in pieces:
        out.update(range(a, b))
    return out


def engine_class(pattern):
    """Set of code points the engine's regex `pattern` (one char) matches."""
    split = pre_tokenizers.Split(Regex(pattern), behavior="removed")
    kept = covered(split.pre_tokenize_str(ALL))
    return {CPS[i] for i in range(len(CPS)) if i not in kept}


def whitespace_pretok_classes():
    """(\\w set, \\s set) of the Whitespace pre-tokenizer (`\\w+|[^\\w\\s]+`)."""
    # Interleave "a" with every code point: a \w char joins the run of a's, a punctuation char is
    # its own piece, a space char is in no piece.
    s = "".join("a" + chr(c) for c in CPS)
    word, space = set(), set()
    cov = set()
    for piece, (a, b) in pre_tokenizers.Whitespace().pre_tokenize_str(s):
        cov.update(range(a, b))
        if "a" in piece:
            for i in range(a, b):
                if i % 2 == 1:
                    word.add(CPS[i // 2])
    for i in range(1, len(s), 2):
        if i not in cov:
            space.add(CPS[i // 2])
    return word, space


def whitespacesplit_space():
    s = "".join("a" + chr(c) for c in CPS)
    cov = covered(pre_tokenizers.WhitespaceSplit().pre_tokenize_str(s))
    return {CPS[i // 2] for i in range(1, len(s), 2) if i not in cov}


def ranges(cps):
    out = []
    for c in sorted(cps):
        if out and out[-1][1] == c - 1:
            out[-1][1] = c
        else:
            out.append([c, c])
    return out


def diff_report(name, engine, python):
    print(f"{name}: engine {len(engine)} code points, unicodedata {len(python)}; "
          f"only engine {len(engine - python)}, only unicodedata {len(python - engine)}",
          file=sys.stderr)


def main():
    L = engine_class(r"\p{L}")
    N = engine_class(r"\p{N}")
    S = engine_class(r"\s")
    diff_report("L", L, {c for c in CPS if ud.category(chr(c)).startswith("L")})
    diff_report("N", N, {c for c in CPS if ud.category(chr(c)).startswith("N")})
    assert not (L & N) and not (L & S) and not (N & S)
    W, WS = whitespace_pretok_classes()
    SPLIT_WS = whitespacesplit_space()
    print(f"Whitespace \\w {len(W)}, \\s {len(WS)}; WhitespaceSplit space {len(SPLIT_WS)}",
          file=sys.stderr)

    # --- NFC data -------------------------------------------------------------------------
    nfd = normalizers.NFD()
    nfc = normalizers.NFC()
    ccc = {}
    decomp_full = {}  # cp -> full canonical decomposition (engine's)
    for c in CPS:
        ch = chr(c)
        k = ud.combining(ch)
        if k:
            ccc[c] = k
        d = nfd.normalize_str(ch)
        if d != ch:
            decomp_full[c] = [ord(x) for x in d]
        if d != ud.normalize("NFD", ch):
            print(f"NFD differs at U+{c:04X}: engine {d!r}, unicodedata "
                  f"{ud.normalize('NFD', ch)!r}; using the engine's", file=sys.stderr)
    # Canonical combining classes as the engine orders them: a mark with class > 1 moves after
    # U+0334 (class 1); one with class 1 moves before U+0345 (class 240).
    def engine_nonzero(c):
        ch = chr(c)
        return nfd.normalize_str(ch + "\u0334").endswith(ch) or \
            nfd.normalize_str("\u0345" + ch).startswith(ud.normalize("NFD", ch))
    n_zeroed = 0
    for c in list(ccc):
        if not engine_nonzero(c):
            del ccc[c]
            n_zeroed += 1
    print(f"{n_zeroed} marks have class 0 in the engine (older Unicode) but not in unicodedata",
          file=sys.stderr)
    for c in CPS:
        if c not in ccc and ud.category(chr(c)) in ("Cn", "Mn", "Mc", "Me") and \
                nfd.normalize_str(chr(c)) == chr(c) and engine_nonzero(c):
            sys.exit(f"engine gives U+{c:04X} a non-zero class that unicodedata lacks")
    # Hangul syllables are algorithmic in the C++ code.
    decomp_full = {c: d for c, d in decomp_full.items() if not (0xAC00 <= c <= 0xD7A3)}
    # Primary composites: one-step canonical decomposition into a pair, not excluded (the engine
    # recomposes it).
    compose = {}
    for c in CPS:
        if 0xAC00 <= c <= 0xD7A3 or c not in decomp_full:
            continue
        dec = ud.decomposition(chr(c))
        if not dec or dec.startswith("<"):
            continue
        parts = [int(x, 16) for x in dec.split()]
        if len(parts) != 2:
            continue
        if nfc.normalize_str(chr(parts[0]) + chr(parts[1])) == chr(c) and \
                nfc.normalize_str(chr(c)) == chr(c):
            compose[(parts[0], parts[1])] = c
    # Quick check: characters that can change under NFC or combine with a neighbour.
    maybe = set(ccc) | set(decomp_full) | {b for (_, b) in compose}
    maybe |= set(range(0x1161, 0x1176)) | set(range(0x11A8, 0x11C3))
    maybe |= set(range(0xAC00, 0xD7A4))  # Hangul LV syllables may take a trailing jamo

    # Cross-check: our algorithm on every code point, and on pairs base+mark.
    print(f"ccc {len(ccc)}, decompositions {len(decomp_full)}, compositions {len(compose)}",
          file=sys.stderr)

    cls = {}
    for c in L:
        cls[c] = 1
    for c in N:
        cls[c] = 2
    for c in S:
        cls[c] = 3

    def class_ranges(mapping):
        out = []
        for c in sorted(mapping):
            v = mapping[c]
            if out and out[-1][1] == c - 1 and out[-1][2] == v:
                out[-1][1] = c
            else:
                out.append([c, c, v])
        return out

    lines = []
    w = lines.append
    w("// GENERATED by dev/gen_unicode_tables.py -- do not edit by hand.")
    w("// Character classes as Hugging Face tokenizers' regex engine sees them, and NFC data.")
    w('#include "io/unicode_tables.h"')
    w("")
    w("namespace mambavl::io::unicode {")
    w("")

    def emit_class(name, rs):
        w(f"const ClassRange {name}[] = {{")
        for a, b, v in rs:
            w(f"    {{0x{a:X}, 0x{b:X}, {v}}},")
        w("};")
        w(f"const size_t {name}_size = sizeof({name}) / sizeof({name}[0]);")
        w("")

    def emit_ranges(name, rs):
        w(f"const Range {name}[] = {{")
        for a, b in rs:
            w(f"    {{0x{a:X}, 0x{b:X}}},")
        w("};")
        w(f"const size_t {name}_size = sizeof({name}) / sizeof({name}[0]);")
        w("")

    emit_class("kGpt2Classes", class_ranges(cls))
    emit_ranges("kWordChars", ranges(W))
    emit_ranges("kWhitespacePretokSpace", ranges(WS))
    emit_ranges("kSplitSpace", ranges(SPLIT_WS))
    emit_class("kCombiningClass", class_ranges(ccc))
    emit_ranges("kNfcMaybe", ranges(maybe))

    pool = []
    entries = []
    for c in sorted(decomp_full):
        d = decomp_full[c]
        entries.append((c, len(pool), len(d)))
        pool.extend(d)
    w("const uint32_t kDecompPool[] = {")
    for i in range(0, len(pool), 8):
        w("    " + " ".join(f"0x{x:X}," for x in pool[i:i + 8]))
    w("};")
    w("const Decomposition kDecompositions[] = {")
    for c, off, n in entries:
        w(f"    {{0x{c:X}, {off}, {n}}},")
    w("};")
    w("const size_t kDecompositions_size = sizeof(kDecompositions) / sizeof(kDecompositions[0]);")
    w("")
    w("const Composition kCompositions[] = {")
    for (a, b) in sorted(compose):
        w(f"    {{0x{a:X}, 0x{b:X}, 0x{compose[(a, b)]:X}}},")
    w("};")
    w("const size_t kCompositions_size = sizeof(kCompositions) / sizeof(kCompositions[0]);")
    w("")
    w("}  // namespace mambavl::io::unicode")
    with open(OUT, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
