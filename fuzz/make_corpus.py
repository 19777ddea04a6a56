#!/usr/bin/env python3
"""Writes the committed seed corpus fuzz/corpus/<harness>/ and the dictionaries fuzz/dict/*.dict.

Development only (standard library; no torch): re-run after changing a harness's input format,
then commit the result. Seeds are small, valid (or nearly valid) files: copies of the test
fixtures, configs of every family, hand-made tokenizers, images and data rows. The first byte of
a fuzz_config / fuzz_llava seed selects the family / reader (see those harnesses).

    python3 fuzz/make_corpus.py
"""
import json
import os
import re
import shutil
import struct
import sys
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests", "fixtures")
OUT = os.path.join(ROOT, "fuzz", "corpus")
DICT = os.path.join(ROOT, "fuzz", "dict")


def write(harness, name, data):
    d = os.path.join(OUT, harness)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def fixture(*parts):
    with open(os.path.join(FIX, *parts), "rb") as f:
        return f.read()


# ---------------------------------------------------------------------------------------------
# safetensors


def safetensors(tensors, metadata=None, pad_header=True):
    """tensors: list of (name, dtype, shape, bytes)."""
    header, buf = {}, b""
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(buf), len(buf) + len(data)]}
        buf += data
    if metadata is not None:
        header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode()
    if pad_header:
        h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + buf


def make_safetensors():
    write("fuzz_safetensors", "reference.safetensors", fixture("safetensors", "reference.safetensors"))
    f32 = struct.pack("<6f", 1, -2, 3.5, 0, 1e-3, 7)
    write("fuzz_safetensors", "f32_meta.safetensors",
          safetensors([("w", "F32", [2, 3], f32)], {"format": "pt", "note": "seed"}))
    write("fuzz_safetensors", "dtypes.safetensors", safetensors([
        ("a.f64", "F64", [2], struct.pack("<2d", 1.0, -1.0)),
        ("b.f16", "F16", [3], struct.pack("<3H", 0x3C00, 0xC000, 0x7BFF)),
        ("c.bf16", "BF16", [1, 2], struct.pack("<2H", 0x3F80, 0x4000)),
        ("d.i64", "I64", [1], struct.pack("<q", -5)),
        ("e.i32", "I32", [2], struct.pack("<2i", 1, 2)),
        ("f.i16", "I16", [1], struct.pack("<h", -3)),
        ("g.i8", "I8", [2], struct.pack("<2b", -1, 1)),
        ("h.u8", "U8", [4], bytes([0, 1, 2, 255])),
        ("i.bool", "BOOL", [3], bytes([0, 1, 1])),
        ("j.empty", "F32", [0, 4], b""),
        ("k.scalar", "F32", [], struct.pack("<f", 2.0)),
    ]))
    # A tiny model's layout (names as a Hugging Face Mamba checkpoint has them).
    t = lambda n: struct.pack("<%df" % n, *[0.01 * i for i in range(n)])
    write("fuzz_safetensors", "tiny_model.safetensors", safetensors([
        ("backbone.embeddings.weight", "F32", [8, 4], t(32)),
        ("backbone.layers.0.mixer.A_log", "F32", [8, 2], t(16)),
        ("backbone.layers.0.mixer.D", "F32", [8], t(8)),
        ("backbone.norm_f.weight", "F32", [4], t(4)),
    ], {"format": "pt"}, pad_header=False))


# ---------------------------------------------------------------------------------------------
# configs (fuzz_config: first byte = family, see the enum in fuzz_config.cpp)

MAMBA, NEOX, LM, VIT, MAMBAOUT, CONNECTOR, VLM, PREPROCESS, VIT_CLASSIFIER, RUN, OVERRIDES = range(11)

HYBRID = {
    "d_model": 32, "d_intermediate": 0, "n_layer": 4, "vocab_size": 50,
    "ssm_cfg": {"layer": "Mamba1", "d_state": 5}, "attn_layer_idx": [1, 3],
    "attn_cfg": {"num_heads": 4, "num_heads_kv": 2, "rotary_emb_dim": 4, "rotary_emb_base": 1000.0,
                 "causal": True},
    "rms_norm": True, "residual_in_fp32": True, "fused_add_norm": True,
    "pad_vocab_size_multiple": 8, "tie_embeddings": True}

PREPROC = {"size": 64, "resample": "bicubic", "mode": "crop", "mean": [0.485, 0.456, 0.406],
           "std": [0.229, 0.224, 0.225]}

CLIP_VISION = {
    "architectures": ["CLIPVisionModel"], "model_type": "clip_vision_model", "hidden_act": "quick_gelu",
    "hidden_size": 32, "image_size": 32, "intermediate_size": 64, "layer_norm_eps": 1e-05,
    "num_attention_heads": 4, "num_channels": 3, "num_hidden_layers": 2, "patch_size": 8,
    "projection_dim": 16}

MAMBA_TEXT = json.loads(fixture("mamba-tiny", "config.json"))


def connector(kind):
    c = {"type": kind, "d_vision": 32, "d_lm": 32}
    if kind != "mlp":
        c["mamba"] = {"d_state": 4, "d_conv": 3, "expand": 2}
    return c


def vlm(family, conn, select="patch"):
    return {"model_type": "mambavl", "architectures": ["MambaVLForConditionalGeneration"],
            "family": family, "vision_config": CLIP_VISION, "connector_config": connector(conn),
            "text_config": MAMBA_TEXT, "vision_feature_layer": -2,
            "vision_feature_select_strategy": select, "vision_final_norm": False, "image_size": 0,
            "image_block": "separator", "image_start_token": "###", "image_row_end_token": "&&",
            "prompt_order": "default"}


def cfg(name, family, content):
    if not isinstance(content, (str, bytes)):
        content = json.dumps(content, indent=1)
    if isinstance(content, str):
        content = content.encode()
    write("fuzz_config", name, bytes([family]) + content)


def make_configs():
    cfg("mamba_hf.json", MAMBA, fixture("mamba-tiny", "config.json"))
    cfg("mamba_orig.json", MAMBA, fixture("mamba-tiny-orig", "config.json"))
    cfg("mamba_hybrid.json", MAMBA, HYBRID)
    cfg("neox.json", NEOX, fixture("gpt_neox-tiny-parallel", "config.json"))
    cfg("neox_seq.json", NEOX, fixture("gpt_neox-tiny-sequential", "config.json"))
    cfg("lm_neox.json", LM, fixture("gpt_neox-tiny-parallel", "config.json"))
    cfg("lm_hybrid.json", LM, HYBRID)
    for v in ["clip-tiny", "clip-full-tiny", "siglip-tiny", "siglip-full-tiny", "eva02-tiny",
              "eva02-clip-tiny"]:
        cfg("vit_%s.json" % v, VIT, fixture("vision", v, "config.json"))
    for v in ["mambaout-tiny", "mambaout-tiny-timm"]:
        cfg("%s.json" % v, MAMBAOUT, fixture("vision", v, "config.json"))
    cfg("mambaout_ssm.json", MAMBAOUT, {"architecture": "mambaout_ssm", "depths": [1, 1],
                                        "dims": [8, 16], "num_classes": 4, "d_state": 4,
                                        "preprocess": PREPROC})
    for k in ["mlp", "vss_mlp", "vss_l2"]:
        cfg("connector_%s.json" % k, CONNECTOR, connector(k))
    cfg("vlm_mamba_mlp.json", VLM, vlm("mamba-vl", "mlp"))
    cfg("vlm_vss.json", VLM, vlm("vl-mamba", "vss_l2"))
    v = vlm("pythia-vl", "mlp", "cls_patch")
    v["text_config"] = json.loads(fixture("gpt_neox-tiny-parallel", "config.json"))
    cfg("vlm_pythia.json", VLM, v)
    v = vlm("hybrid-vl", "mlp")
    v["text_config"] = HYBRID
    v["vision_config"] = json.loads(fixture("vision", "mambaout-tiny", "config.json"))
    cfg("vlm_hybrid_mambaout.json", VLM, v)
    cfg("preprocess.json", PREPROCESS, PREPROC)
    cfg("preprocess_squash.json", PREPROCESS, {"size": 32, "resample": "bilinear", "mode": "squash",
                                               "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]})
    cfg("vit_classifier.json", VIT_CLASSIFIER, {
        "architecture": "vit", "hidden_size": 32, "num_layers": 2, "num_heads": 4,
        "patch_size": 8, "intermediate_size": 64, "image_size": 32, "num_classes": 10,
        "pool": "mean", "causal": False, "preprocess": PREPROC})
    confdir = os.path.join(ROOT, "configs")
    for name in ["mamba-vl-tiny-1-captions.toml", "hybrid-vl-tiny-3-grounding.toml",
                 "vl-mamba-tiny-4-mixed.toml", "pythia-vl-tiny-2-tasks.toml"]:
        with open(os.path.join(confdir, name), "rb") as f:
            cfg("run_" + name, RUN, f.read())
    cfg("run_lm.toml", RUN, 'kind = "lm"\nout = "runs/lm"\n[model]\npreset = "mamba-130m"\n'
                            'tokenizer = "tok/tokenizer.json"\n[data]\nsource = "retrieval"\n'
                            'lengths = [20, 100]\nquery = "both"\n[train]\nbatch_size = 2\n'
                            'precision = "auto"\nno_decay = ["norm", "bias"]\n'
                            '[[train.stages]]\nsteps = 3\nlr = 1e-3\nwarmup_steps = 1\n')
    cfg("run_overrides.toml", RUN,
        'kind = "vlm"\nout = "runs/o"\n[model]\npreset = "mamba-vl-tiny"\n'
        'overrides = { connector_config = { type = "vss_l2", mamba = { d_state = 8 } }, '
        'image_block = "plain" }\n[train]\nbatch_size = 2\n[[train.stages]]\nsteps = 1\n')
    cfg("overrides.txt", OVERRIDES, "train.batch_size=8\ntrain.stages.1.lr=2e-5\n"
                                    "model.overrides.prompt_order=query_first\nname=stage1\n"
                                    "data.tasks=[\"vqa\"]\ntrain.stages.0.freeze=[\"language_model\"]\n")


# ---------------------------------------------------------------------------------------------
# tokenizers: input = tokenizer.json, 0 byte, text


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def added(i, content, special=True, **kw):
    t = {"id": i, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": not special, "special": special}
    t.update(kw)
    return t


def byte_level_bpe():
    b2u = bytes_to_unicode()
    vocab = {"<|endoftext|>": 0}
    for b in range(256):
        vocab[b2u[b]] = len(vocab)
    sp = b2u[ord(" ")]
    merges = [(sp, "t"), ("h", "e"), (sp + "t", "he"), ("i", "n"), (sp, "a"), ("e", "r"),
              ("o", "r"), ("l", "l"), ("H", "e"), ("He", "ll"), ("Hell", "o"), (sp, "w"),
              (sp + "w", "or"), ("l", "d"), (sp + "wor", "ld"), (sp, "i"), (sp + "i", "s")]
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    n = len(vocab)
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [added(0, "<|endoftext|>"), added(n, "<|pad|>"),
                         added(n + 1, "<mask>", lstrip=True),
                         added(n + 2, "[SW]", special=False, single_word=True)],
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                          "use_regex": True},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                           "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None, "fuse_unk": False,
                  "byte_fallback": False, "ignore_merges": False, "vocab": vocab,
                  "merges": [a + " " + b for a, b in merges]},
    }


def word_level():
    words = ["[UNK]", "[BOS]", "[EOS]", "the", "a", "red", "blue", "circle", "square", "is", "left",
             "of", "what", "colour", "?", ".", ",", "###", "&&", "<image>"]
    tmpl = lambda t: {"SpecialToken": {"id": t, "type_id": 0}}
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [added(0, "[UNK]"), added(1, "[BOS]"), added(2, "[EOS]")],
        "normalizer": None, "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [tmpl("[BOS]"), {"Sequence": {"id": "A", "type_id": 0}}, tmpl("[EOS]")],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"[BOS]": {"id": "[BOS]", "ids": [1], "tokens": ["[BOS]"]},
                               "[EOS]": {"id": "[EOS]", "ids": [2], "tokens": ["[EOS]"]}}},
        "decoder": None,
        "model": {"type": "WordLevel", "vocab": {w: i for i, w in enumerate(words)},
                  "unk_token": "[UNK]"},
    }


def char_bpe():
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab["<0x%02X>" % b] = len(vocab)
    for ch in "abcdefghijklmnopqrstuvwxyzé":
        vocab[ch] = len(vocab)
    merges = [("t", "h"), ("th", "e"), ("a", "n"), ("an", "d"), ("é", "t")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [added(0, "<unk>"), added(1, "<s>"), added(2, "</s>")],
        "normalizer": {"type": "NFC"}, "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": None, "decoder": None,
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>",
                  "continuing_subword_prefix": None, "end_of_word_suffix": None, "fuse_unk": True,
                  "byte_fallback": True, "ignore_merges": False, "vocab": vocab,
                  "merges": [[a, b] for a, b in merges]},
    }


def make_tokenizers():
    texts = json.loads(fixture("tokenizer", "texts.json"))
    samples = [t for t in texts if t][:6]
    for name, tok in [("bytelevel_bpe", byte_level_bpe()), ("wordlevel", word_level()),
                      ("char_bpe_byte_fallback", char_bpe())]:
        j = json.dumps(tok, ensure_ascii=False, separators=(",", ":")).encode()
        for k, text in enumerate(samples[:3] + ["the red circle is left of the blue square ."]):
            write("fuzz_tokenizer", "%s_%d" % (name, k), j + b"\0" + text.encode())
    write("fuzz_tokenizer", "bytelevel_bpe_special",
          json.dumps(byte_level_bpe()).encode() + b"\0<|endoftext|>Hello world<mask> [SW] x\r\n\t")


# ---------------------------------------------------------------------------------------------
# images: the input is the file; its last byte also selects options (fuzz_image.cpp)


def png(w, h, color_type, bit_depth, raw_rows, extra_chunks=()):
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 0)
    body = b"".join(chunk(t, d) for t, d in extra_chunks)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + body + \
        chunk(b"IDAT", zlib.compress(raw_rows)) + chunk(b"IEND", b"")


def make_images():
    for name in ["grey_24x17.png", "palette_24x17.png", "rgba_24x17.png", "grey16_24x17.png",
                 "rgb16_24x17.png", "small_24x17.bmp", "small_24x17.gif", "photo_64x48.jpg",
                 "bomb.png"]:
        write("fuzz_image", name, fixture("images", name))
    rows = b"".join(b"\0" + bytes((x * 40 + y * 10 + c * 70) & 255 for x in range(5) for c in range(3))
                    for y in range(3))
    write("fuzz_image", "rgb_5x3.png", png(5, 3, 2, 8, rows))
    # Trailing bytes after IEND are ignored by the decoder but pick other harness options.
    write("fuzz_image", "rgb_5x3_path_squash.png", png(5, 3, 2, 8, rows) + b"\x0b")
    write("fuzz_image", "rgb_5x3_nearest_big.png", png(5, 3, 2, 8, rows) + b"\xf1")
    rows = b"".join(b"\0" + bytes([x * 60 for x in range(4)]) for y in range(1))
    write("fuzz_image", "grey_4x1.png", png(4, 1, 0, 8, rows))
    rows = b"".join(b"\0" + bytes([255]) for _ in range(40))
    write("fuzz_image", "tall_1x40.png", png(1, 40, 0, 8, rows))


# ---------------------------------------------------------------------------------------------
# VL data rows: first byte 0 = LLaVA JSON, 1 = grounding JSONL (fuzz_llava.cpp)


def make_llava():
    conv = lambda *t: [{"from": "human" if i % 2 == 0 else "gpt", "value": v} for i, v in enumerate(t)]
    rows = [
        {"id": "m", "image": "a.png", "conversations": conv("<image>\nWhat is it?", "A dot.",
                                                            "Where?", "Top left.")},
        {"id": 7, "conversations": conv("Hi", "Hello.")},
        {"image": ["a.png", "b.png"], "conversations": conv("<image> and <image>: same?", "No.")},
        {"id": "v", "image": "a.png", "task": "vqa", "question": "what colour?",
         "answers": ["red", "crimson"], "conversations": conv("<image>\nwhat colour?", "red")},
        {"id": "g", "image": "b.png", "task": "grounding", "question": "the dot",
         "box": [0, 0, 0.5, 0.25], "conversations": conv("<image>\nthe dot", "[0.00,0.00,0.50,0.25].")},
        {"id": "c", "image": "a.png", "task": "caption", "conversations": conv("<image>", "A dot.")},
        {"id": "mc", "image": "a.png", "task": "mc", "question": "Which? A. red B. blue",
         "answers": ["A"], "conversations": conv("<image>\nWhich?", "A")},
        {"id": "u", "image": None, "conversations": [{"from": "user", "value": "x"},
                                                     {"from": "assistant", "value": "y"}]},
    ]
    write("fuzz_llava", "llava_rows.json", b"\0" + json.dumps(rows, indent=1).encode())
    write("fuzz_llava", "llava_one.json", b"\0" + json.dumps(rows[:1]).encode())
    write("fuzz_llava", "llava_missing_image.json",
          b"\0" + json.dumps([dict(rows[0], image="missing.png"), rows[1]]).encode())
    lines = [
        {"id": "r1", "image": "a.png", "phrase": "the dot", "bbox": [1, 0, 2, 1], "width": 4, "height": 2},
        {"image": "b.png", "sentence": "left part", "bbox": [0, 1, 1, 2]},
        {"id": 9, "image": "a.png", "phrase": "all", "box": [0, 0, 1, 1]},
    ]
    text = json.dumps(lines[0]) + "\n\n" + json.dumps(lines[1]) + "\n" + json.dumps(lines[2]) + "\r\n"
    write("fuzz_llava", "grounding.jsonl", b"\1" + text.encode())
    write("fuzz_llava", "grounding_one.jsonl", b"\1" + json.dumps(lines[1]).encode() + b"\n")


# ---------------------------------------------------------------------------------------------
# regressions: inputs of fixed findings (fuzz/README.md), so that every CI run tries them again


def jpeg_with_segments(*segments):
    """The photo fixture with extra marker segments right after SOI."""
    d = fixture("images", "photo_64x48.jpg")
    return d[:2] + b"".join(segments) + d[2:]


def make_regressions():
    # nlohmann's out_of_range 406 (a number beyond a double) escaped parse_json_bounded's callers.
    write("fuzz_tokenizer", "regress_number_overflow", b'{"model": 1e400}\0hello')
    write("fuzz_llava", "regress_grounding_number_overflow",
          b'\1{"image": "a.png", "phrase": "x", "box": [0, 0, 1e400, 1]}\n')
    write("fuzz_llava", "regress_llava_number_overflow",
          b'\0[{"id": 1e400, "conversations": [{"from": "human", "value": "a"}, '
          b'{"from": "gpt", "value": "b"}]}]')
    # --set with invalid UTF-8: nlohmann's type_error 316 when the config was dumped.
    write("fuzz_config", "regress_override_invalid_utf8", bytes([OVERRIDES]) + b"train.stages.1.lr=2\xff\n")
    # A JPEG Huffman table with more than 256 codes: stb_image 2.27 writes past its tables.
    write("fuzz_image", "regress_jpeg_dht_4080_codes.jpg",
          jpeg_with_segments(b"\xff\xc4\x00\x13\x00" + b"\xff" * 16) + b"\x00")
    # The same with a table whose 17-byte header runs past its segment's end (stb reads on into
    # the next segment, a COM here whose bytes are 0xff: 4080 codes).
    # As found by the fuzzer: 0xFF fill bytes before SOI, which stb_image accepts, hid the table.
    write("fuzz_image", "regress_jpeg_dht_leading_fill_bytes.jpg", bytes.fromhex(
        "ffffffffffffffffffffffffffffffffffffffffffffd8ffc40014000000003a2076616c75652069"
        "73206e6f7420646566696e65640004000000000000000000000001fffe0012ffffffffff68c1a284"
        "0912d2ffffffffffffffffffe0f6fa92e84749463837610020610000ea15b5c8057dce53e1030202"
        "0303039202a7039d2904"))
    # An IDAT chunk declaring 1.4 GB in a 250-byte file: stb_image 2.27 grew its buffer to the
    # declared length (2 GiB) before reading the chunk (found by the CI fuzz stage).
    write("fuzz_image", "regress_png_idat_length_oom.png", bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000005000000030802000000d45452af0000003b4944415478"
        "9c013000cfff0000468c286eb45096dc78be04a0e62c000a50963278be5aa0e6470d0a1a0a0000000d49"
        "4844520000000500000003080200af520000d4005400003b49444154789c013000cfff0000468ca0e62c"
        "000a50963278be5aa0e682c80eaaf03600145aa03c82c864aaf08c21a43c82c864aaf08c21a493a1a800"
        "00000049454e44ae426082f1"))
    # A 5 x 3 RGB header over 16 MiB of deflated zeros (16 KB): stb_image inflates without bound.
    write("fuzz_image", "regress_png_inflate_bomb.png",
          png(5, 3, 2, 8, bytes(16 << 20)))
    write("fuzz_image", "regress_jpeg_dht_straddling_segment.jpg",
          jpeg_with_segments(b"\xff\xc4\x00\x14\x00" + b"\x00" * 16 + b"\x01",
                             b"\xff\xfe\x00\x12" + b"\xff" * 16) + b"\x00")


# ---------------------------------------------------------------------------------------------
# dictionaries


def literals(paths):
    """The short identifier-like string literals of the given sources (JSON keys and values)."""
    out = set()
    for p in paths:
        with open(os.path.join(ROOT, p), encoding="utf-8") as f:
            src = f.read()
        for m in re.finditer(r'"([A-Za-z_][A-Za-z0-9_.\-]{1,39})"', src):
            out.add(m.group(1))
    return sorted(out)


def dict_entry(e):
    """libFuzzer's dictionary syntax: printable ASCII, everything else (and quote, backslash) as
    \\xNN of the UTF-8 bytes."""
    return '"%s"' % "".join(chr(b) if 32 <= b < 127 and b not in b'"\\' else "\\x%02X" % b
                            for b in e.encode("utf-8"))


def dict_file(name, comment, entries):
    os.makedirs(DICT, exist_ok=True)
    with open(os.path.join(DICT, name), "w", encoding="ascii") as f:
        f.write("# " + comment + "\n# Generated by fuzz/make_corpus.py.\n")
        for e in dict.fromkeys(entries):
            f.write(dict_entry(e) + "\n")


def make_dicts():
    syntax = ["{", "}", "[", "]", ",", ":", '"', "true", "false", "null", "-1", "0", "1e308",
              "-0.0", "1.5", "18446744073709551615", "9223372036854775807", "-9223372036854775808",
              "\\u0000", "\\ud800", "\\\\", "{}", "[]", '""']
    toml = ["=", "[[", "]]", "\n", "'''", '"""', "inf", "nan", "1979-05-27", "0x1F", "0o7",
            "1_000", "{ }", "#"]
    srcs = ["src/models/mamba_config.cpp", "src/models/gpt_neox.cpp", "src/models/vit_config.cpp",
            "src/models/vit_classifier.cpp", "src/models/mambaout.cpp", "src/models/connector.cpp",
            "src/models/vlm.cpp", "src/models/registry.cpp", "src/models/vision_registry.cpp",
            "src/io/config_util.h", "src/io/image.cpp", "src/train/trainer.cpp",
            "src/experiments/train_run.cpp", "src/data/scenes.cpp"]
    keys = [k for k in literals(srcs) if not k.startswith("MVL")]
    dict_file("config.dict", "fuzz_config: JSON / TOML syntax, config keys and values",
              syntax + toml + keys)
    tok_keys = literals(["src/io/tokenizer.cpp"]) + [
        "\u0120", "\u010a", "<0x41>", "<unk>", "<|endoftext|>", "\\u0120", "merges", "vocab"]
    dict_file("tokenizer.dict", "fuzz_tokenizer: JSON syntax, tokenizer.json keys", syntax + tok_keys)
    st_keys = ["dtype", "shape", "data_offsets", "__metadata__", "F64", "F32", "F16", "BF16",
               "I64", "I32", "I16", "I8", "U8", "BOOL", "F8_E4M3", "\x00\x00\x00\x00"]
    dict_file("safetensors.dict", "fuzz_safetensors: JSON syntax, header keys, dtypes", syntax + st_keys)
    vl_keys = literals(["src/data/vl_data.cpp"]) + ["<image>", "a.png", "b.png", "human", "gpt",
                                                    "user", "assistant"]
    dict_file("llava.dict", "fuzz_llava: JSON syntax, row keys", syntax + vl_keys)
    img = ["\x89PNG\r\n\x1a\n", "IHDR", "IDAT", "IEND", "PLTE", "tRNS", "CgBI", "\xff\xd8",
           "\xff\xd9", "\xff\xc0", "\xff\xc2", "\xff\xc4", "\xff\xda", "\xff\xdb", "\xff\xdd",
           "JFIF", "BM", "GIF87a", "GIF89a", "!\xf9", ",", ";"]
    with open(os.path.join(DICT, "image.dict"), "w", encoding="ascii") as f:
        f.write("# fuzz_image: format magics, PNG chunk types, JPEG markers.\n"
                "# Generated by fuzz/make_corpus.py.\n")
        for e in img:  # byte strings written as latin-1 characters
            f.write('"%s"\n' % "".join(chr(b) if 32 <= b < 127 and b not in b'"\\' else
                                       "\\x%02X" % b for b in e.encode("latin-1")))


def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    make_safetensors()
    make_configs()
    make_tokenizers()
    make_images()
    make_llava()
    make_regressions()
    make_dicts()
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(OUT) for f in fs)
    print("corpus: %d files, %d bytes" % (sum(len(fs) for _, _, fs in os.walk(OUT)), total))


if __name__ == "__main__":
    sys.exit(main())
