#!/usr/bin/env python3
"""Generate the MambaOut golden fixtures under tests/fixtures/vision/ (read by tests/test_mambaout.cpp).

A tiny MambaOut (depths 1,1,2,1; dims 8,16,24,32; 10 classes) built with timm's implementation
(timm.models.mambaout.MambaOut, timm 1.0.31), with random non-trivial weights (LayerNorm weights
and biases included), evaluated on a non-square 64x48 batch:

    mambaout-tiny/        config.json (our format), model.safetensors in the OFFICIAL key layout
                          (downsample_layers.*, stages.{s}.{b}.*, norm, head.{fc1,norm,fc2}),
                          golden.safetensors
    mambaout-tiny-timm/   the same model, model.safetensors in timm's key layout
                          (stem.*, stages.{s}.downsample.*, stages.{s}.blocks.{b}.*, head.*);
                          its golden values are mambaout-tiny's

golden.safetensors: input [2, 3, 64, 48], labels [2] (int64), logits [2, 10]
(eval mode), features [2, 2, 2, 32] (forward_features, NHWC), loss (cross entropy, eval mode),
grad.<official key> for every parameter, and logits_train [2, 10]: training mode (drop path
0.3, linear per block) after torch.manual_seed(TRAIN_SEED), no grad.

The official -> timm key map is timm's own checkpoint_filter_fn run in reverse: the script checks
that filter(official state dict) equals timm's state dict.

Deterministic (fixed seeds, one thread); `--check` regenerates into a temp dir and byte-compares.

    .venv-dev/bin/python dev/make_mambaout_fixtures.py [--check]
"""

from __future__ import annotations

import argparse
import filecmp
import json
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from timm.models.mambaout import MambaOut, checkpoint_filter_fn

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "tests" / "fixtures" / "vision"

DEPTHS = [1, 1, 2, 1]
DIMS = [8, 16, 24, 32]
NUM_CLASSES = 10
DROP_PATH = 0.3
TRAIN_SEED = 1234
PREPROCESS = {
    "size": 64,
    "resample": "bicubic",
    "mode": "crop",
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
}


def official_key(timm_key: str) -> str:
    """timm key -> official key (the inverse of timm's checkpoint_filter_fn)."""
    import re

    k = timm_key
    if k.startswith("stem."):
        return "downsample_layers.0." + k[len("stem."):]
    m = re.match(r"stages\.(\d+)\.downsample\.(.*)", k)
    if m:
        return f"downsample_layers.{m.group(1)}.{m.group(2)}"
    m = re.match(r"stages\.(\d+)\.blocks\.(\d+)\.(.*)", k)
    if m:
        return f"stages.{m.group(1)}.{m.group(2)}.{m.group(3)}"
    for a, b in [
        ("head.norm.", "norm."),
        ("head.pre_logits.fc.", "head.fc1."),
        ("head.pre_logits.norm.", "head.norm."),
        ("head.fc.", "head.fc2."),
    ]:
        if k.startswith(a):
            return b + k[len(a):]
    raise ValueError(k)


def build() -> MambaOut:
    torch.manual_seed(0)
    model = MambaOut(num_classes=NUM_CLASSES, depths=DEPTHS, dims=DIMS, drop_path_rate=DROP_PATH)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith(".weight"):
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            else:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / fan_in**0.5)
    return model


def generate(out: Path) -> None:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    model = build()
    timm_sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    official_sd = {official_key(k): v for k, v in timm_sd.items()}
    # timm's own official -> timm mapping must give back timm's state dict
    refiltered = checkpoint_filter_fn(dict(official_sd), model)
    assert set(refiltered) == set(timm_sd), set(refiltered) ^ set(timm_sd)
    for k in timm_sd:
        assert torch.equal(refiltered[k], timm_sd[k]), k

    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 64, 48, generator=g)
    labels = torch.tensor([3, 7], dtype=torch.int64)

    model.eval()
    feats = model.forward_features(x)
    logits = model.forward_head(feats)
    loss = torch.nn.functional.cross_entropy(logits, labels)
    model.zero_grad()
    loss.backward()
    golden = {
        "input": x,
        "labels": labels,
        "logits": logits.detach(),
        "features": feats.detach(),
        "loss": loss.detach().reshape(1),
    }
    for name, p in model.named_parameters():
        golden["grad." + official_key(name)] = p.grad.detach().clone()

    model.train()
    torch.manual_seed(TRAIN_SEED)
    with torch.no_grad():
        golden["logits_train"] = model(x)
    assert not torch.allclose(golden["logits_train"], golden["logits"])
    golden = {k: v.contiguous() for k, v in golden.items()}

    config = {
        "architecture": "mambaout",
        "depths": DEPTHS,
        "dims": DIMS,
        "num_classes": NUM_CLASSES,
        "drop_path_rate": DROP_PATH,
        "preprocess": PREPROCESS,
    }
    for name, sd in [("mambaout-tiny", official_sd), ("mambaout-tiny-timm", timm_sd)]:
        d = out / name
        d.mkdir(parents=True, exist_ok=True)
        save_file(sd, str(d / "model.safetensors"), metadata={"format": "pt"})
        if name == "mambaout-tiny":
            save_file(golden, str(d / "golden.safetensors"))
        (d / "model.safetensors").chmod(0o644)
        (d / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        for f in d.iterdir():
            f.chmod(0o644)
            assert f.stat().st_size < 400_000, f
    n = sum(p.numel() for p in model.parameters())
    print(f"{n} parameters; logits {logits.flatten()[:4].tolist()}; loss {loss.item():.6f}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    if not args.check:
        generate(OUT)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        bad = []
        for name in ["mambaout-tiny", "mambaout-tiny-timm"]:
            for f in ["config.json", "model.safetensors", "golden.safetensors"]:
                a, b = Path(tmp) / name / f, OUT / name / f
                if not a.exists():
                    continue
                if not b.exists() or not filecmp.cmp(a, b, shallow=False):
                    bad.append(str(b))
        print("differs: " + ", ".join(bad) if bad else "fixtures are up to date")
        return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
