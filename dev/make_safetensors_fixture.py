#!/usr/bin/env python3
"""Writes tests/fixtures/safetensors/reference.safetensors with the reference `safetensors`
library, so the C++ reader is tested against a file it did not write itself.

Every value is exactly representable in its dtype; tests/test_safetensors.cpp recomputes them
from the same formulas (keep the two in sync):
  f32    F32  [3, 4]  i * 0.25 - 1.0            (i = 0..11, row-major)
  f16    F16  [2, 3]  i * 0.5 - 1.5             (i = 0..5)
  bf16   BF16 [8]     (i - 4) * 0.125           (i = 0..7)
  i64    I64  [5]     i * 1000000007 - 2        (i = 0..4)
  scalar F32  []      3.5
metadata: {"format": "pt", "source": "mambavl-fixture"}

Usage (dev only): /work/main/.venv-dev/bin/python dev/make_safetensors_fixture.py
"""
import pathlib

import torch
from safetensors.torch import save_file

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests/fixtures/safetensors/reference.safetensors"


def main() -> None:
    tensors = {
        "f32": (torch.arange(12, dtype=torch.float64) * 0.25 - 1.0).to(torch.float32).reshape(3, 4),
        "f16": (torch.arange(6, dtype=torch.float64) * 0.5 - 1.5).to(torch.float16).reshape(2, 3),
        "bf16": ((torch.arange(8, dtype=torch.float64) - 4) * 0.125).to(torch.bfloat16),
        "i64": torch.arange(5, dtype=torch.int64) * 1000000007 - 2,
        "scalar": torch.tensor(3.5, dtype=torch.float32),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(OUT), metadata={"format": "pt", "source": "mambavl-fixture"})
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
