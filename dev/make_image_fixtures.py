#!/usr/bin/env python3
"""Writes tests/fixtures/images/: small images in every format the decoder handles, plus what the
reference libraries make of them, for tests/test_image.cpp.

  src_64x48.png          RGB test card (gradients, a white disc, a black bar, noise)
  photo_64x48.jpg        the same as JPEG (quality 90, 4:2:0)
  grey / grey_alpha / rgba / palette (with transparency) / rgb16 / grey16 _24x17.png,
  small_24x17.bmp, small_24x17.gif
  truncated.png, truncated.jpg   the first 60 % of src / photo
  not_image.txt, empty.png        (0 bytes), bomb.png: a valid PNG header declaring 30000 x 30000
  expected.safetensors   uint8 [H, W, 3] per decoded file: PIL's Image.open(f).convert("RGB"),
                         except 16-bit files (PIL clips I;16 to 255 when converting; stb and we
                         keep the high byte, value >> 8, computed here from the raw samples)
  resize.safetensors     PIL's Image.resize of src (uint8 [H, W, 3]), "<mode>_<W>x<H>"
  preprocess.safetensors transformers' pixel_values [1, 3, S, S] float32:
                         clip_s32 / clip_s40: CLIPImageProcessor (torchvision backend, the v5 default)
                         with shortest_edge = crop = S on src; clip_portrait_s32: same on src
                         transposed (48 x 64); clip_pil_s32: CLIPImageProcessorPil;
                         siglip_s32: SiglipImageProcessor (squash to 32 x 32)

Usage (dev only): .venv-dev/bin/python dev/make_image_fixtures.py
Needs Pillow and torchvision besides dev/requirements.txt. Made with Python 3.11, Pillow 13.0.0,
torch 2.11.0 (CPU, AVX2: its 8-bit resize kernel is what CLIPImageProcessor uses),
torchvision 0.26.0, transformers 5.23.0. A second run rewrites identical bytes.
"""
import pathlib
import struct
import zlib

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests/fixtures/images"


def test_card(w, h, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 128 + 100 * np.sin(x / 7.0) * np.cos(y / 5.0)
    g = 255 * x / (w - 1)
    b = 255 * (y / (h - 1)) ** 2
    a = np.stack([r, g, b], -1)
    a[(x - w * 0.6) ** 2 + (y - h * 0.4) ** 2 < (h * 0.2) ** 2] = [255, 255, 255]
    a[int(h * 0.7):int(h * 0.85), int(w * 0.1):int(w * 0.4)] = [0, 0, 0]
    a += rng.normal(0, 12, a.shape)
    return np.clip(np.round(a), 0, 255).astype(np.uint8)


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png16(samples):
    """A 16-bit PNG (grey [H, W] or RGB [H, W, 3] uint16), written by hand: PIL cannot."""
    h, w = samples.shape[:2]
    color = 0 if samples.ndim == 2 else 2
    rows = samples.astype(">u2").reshape(h, -1).tobytes()
    stride = len(rows) // h
    raw = b"".join(b"\x00" + rows[i * stride:(i + 1) * stride] for i in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, color, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(raw))
            + png_chunk(b"IEND", b""))


def bomb_png(w, h):
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + png_chunk(b"IEND", b""))


def rgb_of(path):
    with Image.open(path) as im:
        return torch.from_numpy(np.asarray(im.convert("RGB")).copy())


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    expected = {}

    src = test_card(64, 48)
    Image.fromarray(src).save(OUT / "src_64x48.png")
    Image.fromarray(src).save(OUT / "photo_64x48.jpg", quality=90, subsampling=2)
    for name in ["src_64x48.png", "photo_64x48.jpg"]:
        expected[name] = rgb_of(OUT / name)
    assert (expected["src_64x48.png"].numpy() == src).all()

    small = test_card(24, 17, seed=1)
    grey = (small.astype(np.float64) @ [0.299, 0.587, 0.114]).round().astype(np.uint8)
    alpha = np.linspace(0, 255, 24 * 17).reshape(17, 24).round().astype(np.uint8)
    Image.fromarray(grey, "L").save(OUT / "grey_24x17.png")
    Image.fromarray(np.stack([grey, alpha], -1), "LA").save(OUT / "grey_alpha_24x17.png")
    Image.fromarray(np.concatenate([small, alpha[..., None]], -1), "RGBA").save(OUT / "rgba_24x17.png")
    pal = Image.fromarray(small).quantize(colors=16)
    pal.info["transparency"] = 3
    pal.save(OUT / "palette_24x17.png", transparency=3)
    Image.fromarray(small).save(OUT / "small_24x17.bmp")
    Image.fromarray(small).quantize(colors=32).save(OUT / "small_24x17.gif")
    for name in ["grey_24x17.png", "grey_alpha_24x17.png", "rgba_24x17.png", "palette_24x17.png",
                 "small_24x17.bmp", "small_24x17.gif"]:
        expected[name] = rgb_of(OUT / name)

    rng = np.random.default_rng(2)
    rgb16 = rng.integers(0, 65536, (17, 24, 3), dtype=np.uint16)
    grey16 = rng.integers(0, 65536, (17, 24), dtype=np.uint16)
    (OUT / "rgb16_24x17.png").write_bytes(png16(rgb16))
    (OUT / "grey16_24x17.png").write_bytes(png16(grey16))
    expected["rgb16_24x17.png"] = torch.from_numpy((rgb16 >> 8).astype(np.uint8))
    expected["grey16_24x17.png"] = torch.from_numpy(
        np.repeat((grey16 >> 8).astype(np.uint8)[..., None], 3, -1))
    with Image.open(OUT / "rgb16_24x17.png") as im:  # PIL keeps the high byte for RGB too
        assert (np.asarray(im.convert("RGB")) == (rgb16 >> 8)).all()

    for name, cut in [("truncated.png", "src_64x48.png"), ("truncated.jpg", "photo_64x48.jpg")]:
        data = (OUT / cut).read_bytes()
        (OUT / name).write_bytes(data[: len(data) * 6 // 10])
    (OUT / "not_image.txt").write_text("this is not an image\n")
    (OUT / "empty.png").write_bytes(b"")
    (OUT / "bomb.png").write_bytes(bomb_png(30000, 30000))
    save_file({k: v.contiguous() for k, v in expected.items()}, str(OUT / "expected.safetensors"))

    resized = {}
    src_im = Image.fromarray(src)
    modes = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}
    for w, h in [(23, 17), (72, 55), (40, 70)]:
        for mode, flag in modes.items():
            resized[f"{mode}_{w}x{h}"] = torch.from_numpy(np.asarray(src_im.resize((w, h), flag)).copy())
    save_file(resized, str(OUT / "resize.safetensors"))

    from transformers import CLIPImageProcessor, CLIPImageProcessorPil, SiglipImageProcessor

    def clip(cls, s, img):
        proc = cls(size={"shortest_edge": s}, crop_size={"height": s, "width": s})
        return proc(images=img, return_tensors="pt")["pixel_values"].to(torch.float32)

    pre = {
        "clip_s32": clip(CLIPImageProcessor, 32, src_im),
        "clip_s40": clip(CLIPImageProcessor, 40, src_im),
        "clip_portrait_s32": clip(CLIPImageProcessor, 32, Image.fromarray(src.transpose(1, 0, 2).copy())),
        "clip_pil_s32": clip(CLIPImageProcessorPil, 32, src_im),
    }
    sig = SiglipImageProcessor(size={"height": 32, "width": 32})
    assert sig.resample == Image.BICUBIC and list(sig.image_mean) == [0.5, 0.5, 0.5], sig
    pre["siglip_s32"] = sig(images=src_im, return_tensors="pt")["pixel_values"].to(torch.float32)
    save_file({k: v.contiguous() for k, v in pre.items()}, str(OUT / "preprocess.safetensors"))

    total = sum(p.stat().st_size for p in OUT.iterdir())
    print(f"wrote {OUT} ({total} bytes)")


if __name__ == "__main__":
    main()
