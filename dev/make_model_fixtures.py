#!/usr/bin/env python3
"""Generate the small golden model fixtures under tests/fixtures/.

Deterministic: fixed seeds, single CPU thread, fp32.  Re-running reproduces
byte-identical files (checked by `--check`, which regenerates into a temp dir
and compares).  Runs on CPU in a few seconds.

    .venv-dev/bin/python dev/make_model_fixtures.py            # (re)generate
    .venv-dev/bin/python dev/make_model_fixtures.py --check    # regenerate to tmp, compare bytes

See dev/README.md for what each fixture contains and the facts recorded about
transformers' behaviour.
"""

from __future__ import annotations

import argparse
import copy
import filecmp
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import (  # noqa: E402
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    MambaConfig,
    MambaForCausalLM,
)

transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()
warnings.filterwarnings("ignore")

REPO = Path(__file__).resolve().parent.parent
SEQ_LEN = 11
BATCH = 2

# Noise added to every parameter after the default init, so that no parameter
# sits at a trivial value (D=1, norm weights=1, zero biases, A_log=log(n)).
NOISE_MATRIX = 0.02  # for >=2-D params
NOISE_VECTOR = 0.1  # for 1-D params (norm weights, biases, D)


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------
def perturb_(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        # named_parameters() de-duplicates tied parameters (sorted for stable order)
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            scale = NOISE_VECTOR if p.dim() == 1 else NOISE_MATRIX
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
            p.add_((scale * noise).to(p.dtype))


def make_input_ids(seed: int, high: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, high, (BATCH, SEQ_LEN), generator=g, dtype=torch.int64)


def saved_keys(folder: Path) -> dict[str, tuple[list[int], str]]:
    """key -> (shape, dtype) over all safetensors weight files in a saved folder."""
    out = {}
    files = sorted(folder.glob("model*.safetensors"))
    for f in files:
        with safe_open(str(f), framework="pt") as sf:
            for k in sf.keys():
                sl = sf.get_slice(k)
                out[k] = (list(sl.get_shape()), sl.get_dtype())
    return dict(sorted(out.items()))


def hf_loss_reference(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """HF ForCausalLMLoss written out: mean CE of logits[:, t] vs labels[:, t+1]."""
    v = logits.shape[-1]
    return torch.nn.functional.cross_entropy(
        logits[:, :-1, :].reshape(-1, v).float(), labels[:, 1:].reshape(-1), reduction="mean"
    )


def compute_golden(model, input_ids: torch.Tensor, name_map: dict[str, str]):
    """fp32 forward + backward in eval mode. Returns the golden tensor dict."""
    model = model.float().eval()
    model.zero_grad(set_to_none=True)
    head = model.get_output_embeddings()
    captured = {}

    def hook(_mod, args):
        captured["h"] = args[0]

    handle = head.register_forward_pre_hook(hook)
    out = model(input_ids=input_ids, labels=input_ids, use_cache=False)
    handle.remove()
    loss = out.loss
    ref = hf_loss_reference(out.logits, input_ids)
    assert torch.allclose(loss, ref, rtol=0, atol=1e-6), (loss, ref)
    loss.backward()

    golden = {
        "input_ids": input_ids.clone().contiguous(),
        "logits": out.logits.detach().float().contiguous(),
        "loss": loss.detach().float().reshape(()).contiguous(),
        "hidden_last": captured["h"].detach().float().contiguous(),
    }
    for pname, p in model.named_parameters():  # tied params appear once
        key = name_map[pname]
        assert p.grad is not None, pname
        golden["grad." + key] = p.grad.detach().float().contiguous()
    return golden


def param_to_checkpoint_map(model, folder: Path, renames: dict[str, str] | None = None) -> dict[str, str]:
    """Map module parameter names to the keys actually written to the checkpoint."""
    keys = saved_keys(folder)
    renames = renames or {}
    m = {}
    for pname, _ in model.named_parameters():
        key = renames.get(pname, pname)
        assert key in keys, f"{pname} -> {key} not in saved keys {list(keys)}"
        m[pname] = key
    return m


def write_golden(folder: Path, golden: dict[str, torch.Tensor]) -> None:
    save_file(dict(sorted(golden.items())), str(folder / "golden.safetensors"), metadata={"format": "pt"})


def folder_size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file())


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def summary_json(folder: Path, fixture: str, model, golden, facts: dict, config_summary: dict) -> dict:
    keys = saved_keys(folder)
    n_params = sum(p.numel() for _, p in model.named_parameters())
    g = {
        "fixture": fixture,
        "generator": "dev/make_model_fixtures.py",
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__.split("+")[0],
        "config": config_summary,
        "input_ids": golden["input_ids"].tolist(),
        "loss": float(golden["loss"]),
        "loss_definition": "HF ForCausalLMLoss with labels=input_ids: mean over the B*(T-1)=20 positions of "
        "cross_entropy(logits[:, t, :], input_ids[:, t+1]) in fp32",
        "logits_sum": float(golden["logits"].double().sum()),
        "logits_abs_sum": float(golden["logits"].double().abs().sum()),
        "hidden_last_sum": float(golden["hidden_last"].double().sum()),
        "num_parameters": n_params,
        "checkpoint_keys": {k: {"shape": s, "dtype": d} for k, (s, d) in keys.items()},
        "golden_keys": sorted(golden.keys()),
        "facts": facts,
    }
    write_json(folder / "golden.json", g)
    return g


# --------------------------------------------------------------------------------------
# Mamba
# --------------------------------------------------------------------------------------
def mamba_config(hidden, layers, vocab, use_bias):
    return MambaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        state_size=8,
        conv_kernel=4,
        expand=2,
        num_hidden_layers=layers,
        time_step_rank="auto",
        use_conv_bias=True,
        use_bias=use_bias,
        tie_word_embeddings=True,
        layer_norm_epsilon=1e-5,
        residual_in_fp32=True,
    )


def build_mamba(cfg: MambaConfig, seed: int) -> MambaForCausalLM:
    torch.manual_seed(seed)
    model = MambaForCausalLM(cfg).float()
    perturb_(model, seed + 1000)
    model.eval()
    return model


def mamba_cfg_summary(cfg: MambaConfig) -> dict:
    return {
        "architecture": "MambaForCausalLM",
        "hidden_size": cfg.hidden_size,
        "state_size": cfg.state_size,
        "conv_kernel": cfg.conv_kernel,
        "expand": cfg.expand,
        "intermediate_size": cfg.intermediate_size,
        "time_step_rank": cfg.time_step_rank,
        "num_hidden_layers": cfg.num_hidden_layers,
        "vocab_size": cfg.vocab_size,
        "use_bias": cfg.use_bias,
        "use_conv_bias": cfg.use_conv_bias,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "layer_norm_epsilon": cfg.layer_norm_epsilon,
        "residual_in_fp32": cfg.residual_in_fp32,
    }


def mamba_facts(model, folder: Path) -> dict:
    import transformers.models.mamba.modeling_mamba as mm

    keys = saved_keys(folder)
    scan = mm.mamba_selective_scan
    return {
        "lm_head_weight_saved": "lm_head.weight" in keys,
        "lm_head_is_embedding_object": model.lm_head.weight is model.backbone.embeddings.weight,
        "mamba_ssm_importable": _importable("mamba_ssm"),
        "causal_conv1d_importable": _importable("causal_conv1d"),
        "kernels_importable": _importable("kernels"),
        "mambapy_importable": _importable("mambapy"),
        "selective_scan_impl": f"{scan.__module__}.{getattr(scan, '__qualname__', scan)} (torch fallback; "
        "sequential Python loop over time since use_mambapy=False and not compiling)",
        "config_use_mambapy": model.config.use_mambapy,
        "config_use_associative_scan": model.config.use_associative_scan,
    }


def _importable(mod: str) -> bool:
    try:
        __import__(mod)
        return True
    except Exception:
        return False


def assert_mamba_uses_torch_path():
    """The hub-kernel wrapper must have fallen back to the torch functions defined in modeling_mamba."""
    import transformers.models.mamba.modeling_mamba as mm

    for fname in ["mamba_selective_scan", "causal_conv1d_fn", "mamba_inner_fn"]:
        f = getattr(mm, fname)
        inner = getattr(f, "__wrapped__", f)
        assert inner.__module__ == mm.__name__, (fname, inner)
    # training-mode fused path returns None (torch stub) -> falls through to the same torch ops
    assert mm.mamba_inner_fn(None, None, None, None, None, None, None, None) is None


def save_hf(model, folder: Path, **kw):
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    try:
        model.save_pretrained(str(folder), safe_serialization=True, **kw)
    except TypeError:
        model.save_pretrained(str(folder), **kw)


def verify_reload(cls, folder: Path, golden: dict, dtype=torch.float32, atol=1e-5):
    m = cls.from_pretrained(str(folder), dtype=dtype, attn_implementation="eager")
    m = m.float().eval()
    with torch.no_grad():
        out = m(input_ids=golden["input_ids"], labels=golden["input_ids"], use_cache=False)
    assert torch.allclose(out.logits.float(), golden["logits"], rtol=0, atol=atol), (
        folder,
        (out.logits - golden["logits"]).abs().max(),
    )
    assert abs(float(out.loss) - float(golden["loss"])) <= atol, folder
    return m


def gen_mamba_family(root: Path) -> dict:
    results = {}
    assert_mamba_uses_torch_path()

    # ---- 1. mamba-tiny ------------------------------------------------------------
    cfg = mamba_config(32, 2, 96, use_bias=False)
    assert cfg.time_step_rank == 2
    model = build_mamba(cfg, seed=1234)
    # ids < 90 so that the padded-vocab "orig" variant (real vocab 90 -> 96 rows) shares the batch
    ids = make_input_ids(seed=42, high=90)
    folder = root / "mamba-tiny"
    save_hf(model, folder)
    nmap = param_to_checkpoint_map(model, folder)
    golden = compute_golden(model, ids, nmap)
    # sanity: the cache path (use_cache=True, the eval default) gives the same logits
    with torch.no_grad():
        lc = model(input_ids=ids, use_cache=True).logits
    assert torch.allclose(lc, golden["logits"], atol=1e-6)
    write_golden(folder, golden)
    facts = mamba_facts(model, folder)
    summary_json(folder, "mamba-tiny", model, golden, facts, mamba_cfg_summary(cfg))
    verify_reload(MambaForCausalLM, folder, golden)
    results["mamba-tiny"] = facts
    tiny_model, tiny_golden, tiny_ids = model, golden, ids

    # ---- 8. training losses (5 AdamW steps on the same batch) ---------------------
    train = train_losses(tiny_model, tiny_ids)
    write_json(folder / "train_losses.json", train)
    assert abs(train["losses"][0] - float(tiny_golden["loss"])) < 1e-6

    # ---- 2. mamba-tiny-bias ------------------------------------------------------
    cfg_b = mamba_config(40, 3, 100, use_bias=True)
    assert cfg_b.time_step_rank == 3
    model_b = build_mamba(cfg_b, seed=2345)
    ids_b = make_input_ids(seed=43, high=100)
    folder_b = root / "mamba-tiny-bias"
    save_hf(model_b, folder_b)
    golden_b = compute_golden(model_b, ids_b, param_to_checkpoint_map(model_b, folder_b))
    write_golden(folder_b, golden_b)
    facts_b = mamba_facts(model_b, folder_b)
    summary_json(folder_b, "mamba-tiny-bias", model_b, golden_b, facts_b, mamba_cfg_summary(cfg_b))
    verify_reload(MambaForCausalLM, folder_b, golden_b)
    results["mamba-tiny-bias"] = facts_b

    # ---- 3. mamba-tiny-orig ------------------------------------------------------
    folder_o = root / "mamba-tiny-orig"
    if folder_o.exists():
        shutil.rmtree(folder_o)
    folder_o.mkdir(parents=True)
    sd = {k: v.detach().clone().contiguous() for k, v in load_file(str(folder / "model.safetensors")).items()}
    assert "backbone.embeddings.weight" in sd and "lm_head.weight" not in sd
    orig = {}
    for k, v in sd.items():
        orig[k.replace("backbone.embeddings.", "backbone.embedding.")] = v
    orig["lm_head.weight"] = orig["backbone.embedding.weight"].clone()
    save_file(dict(sorted(orig.items())), str(folder_o / "model.safetensors"), metadata={"format": "pt"})
    orig_cfg = {
        "d_model": 32,
        "n_layer": 2,
        "vocab_size": 90,
        # mamba_ssm's Mamba defaults are d_state=16, d_conv=4, expand=2, dt_rank="auto",
        # conv_bias=True, bias=False; only d_state differs from the default here.
        "ssm_cfg": {"d_state": 8},
        "rms_norm": True,
        "residual_in_fp32": True,
        "fused_add_norm": True,
        "pad_vocab_size_multiple": 8,
        "tie_embeddings": True,
    }
    padded = math.ceil(orig_cfg["vocab_size"] / orig_cfg["pad_vocab_size_multiple"]) * orig_cfg["pad_vocab_size_multiple"]
    assert padded == orig["backbone.embedding.weight"].shape[0] == 96
    write_json(folder_o / "config.json", orig_cfg)
    golden_o = {}
    for k, v in tiny_golden.items():
        golden_o[k.replace("grad.backbone.embeddings.", "grad.backbone.embedding.")] = v.clone()
    assert "grad.lm_head.weight" not in golden_o
    write_golden(folder_o, golden_o)
    # verify: rename back, load into the HF model, reproduce golden logits
    back = load_file(str(folder_o / "model.safetensors"))
    assert torch.equal(back["lm_head.weight"], back["backbone.embedding.weight"])
    back = {k.replace("backbone.embedding.", "backbone.embeddings."): v for k, v in back.items()}
    vm = MambaForCausalLM(mamba_config(32, 2, 96, use_bias=False)).float().eval()
    missing, unexpected = vm.load_state_dict(back, strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    with torch.no_grad():
        lo = vm(input_ids=golden_o["input_ids"], use_cache=False).logits
    assert torch.equal(lo, golden_o["logits"]), (lo - golden_o["logits"]).abs().max()
    facts_o = {
        "layout": "original state-spaces/mamba (mamba_ssm MambaLMHeadModel) naming",
        "embedding_key": "backbone.embedding.weight",
        "lm_head_weight_saved": True,
        "lm_head_equals_embedding": True,
        "grad_naming": "total (embedding + tied head) gradient stored under grad.backbone.embedding.weight; "
        "no grad.lm_head.weight",
        "real_vocab_size": 90,
        "padded_vocab_rows": padded,
        "same_weights_as": "mamba-tiny",
    }
    g = summary_json(folder_o, "mamba-tiny-orig", tiny_model, golden_o, facts_o, orig_cfg)
    results["mamba-tiny-orig"] = facts_o

    # ---- 4. mamba-tiny-sharded ---------------------------------------------------
    folder_s = root / "mamba-tiny-sharded"
    save_hf(tiny_model, folder_s, max_shard_size="40KB")
    shards = sorted(p.name for p in folder_s.glob("model-*.safetensors"))
    assert len(shards) >= 2, shards
    assert (folder_s / "model.safetensors.index.json").exists()
    shutil.copyfile(folder / "golden.safetensors", folder_s / "golden.safetensors")
    verify_reload(MambaForCausalLM, folder_s, tiny_golden)
    idx = json.loads((folder_s / "model.safetensors.index.json").read_text())
    facts_s = {
        "shards": shards,
        "max_shard_size": "40KB",
        "index_written": True,
        "index_metadata": idx.get("metadata"),
        "golden": "copy of mamba-tiny/golden.safetensors (same weights)",
    }
    summary_json(folder_s, "mamba-tiny-sharded", tiny_model, tiny_golden, facts_s, mamba_cfg_summary(cfg))
    results["mamba-tiny-sharded"] = facts_s

    # ---- 5. mamba-tiny-bf16 ------------------------------------------------------
    folder_h = root / "mamba-tiny-bf16"
    bf = copy.deepcopy(tiny_model).to(torch.bfloat16)
    save_hf(bf, folder_h)
    keys_h = saved_keys(folder_h)
    assert all(d == "BF16" for _, d in keys_h.values()), keys_h
    m32 = copy.deepcopy(bf).float()  # bf16-rounded weights, upcast to fp32
    golden_h = compute_golden(m32, tiny_ids, param_to_checkpoint_map(m32, folder_h))
    write_golden(folder_h, golden_h)
    verify_reload(MambaForCausalLM, folder_h, golden_h, dtype=torch.float32)
    cfg_json = json.loads((folder_h / "config.json").read_text())
    facts_h = {
        "weights_dtype": "bfloat16",
        "config_dtype_field": cfg_json.get("dtype", cfg_json.get("torch_dtype")),
        "golden": "fp32 computation from the bf16-rounded weights upcast to fp32 (same input_ids as mamba-tiny)",
        "max_abs_logit_diff_vs_fp32_mamba_tiny": float((golden_h["logits"] - tiny_golden["logits"]).abs().max()),
    }
    summary_json(folder_h, "mamba-tiny-bf16", m32, golden_h, facts_h, mamba_cfg_summary(cfg))
    results["mamba-tiny-bf16"] = facts_h
    return results


def train_losses(model0, ids) -> dict:
    model = copy.deepcopy(model0).float()
    model.train()
    opt = torch.optim.AdamW(
        model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, foreach=False
    )
    losses = []
    for _ in range(5):
        opt.zero_grad(set_to_none=True)
        out = model(input_ids=ids, labels=ids, use_cache=False)
        losses.append(float(out.loss))
        out.loss.backward()
        opt.step()
    with torch.no_grad():
        final = float(model(input_ids=ids, labels=ids, use_cache=False).loss)
    return {
        "description": "mamba-tiny weights; 5 steps of torch.optim.AdamW on the golden batch (same batch each step). "
        "losses[i] is the loss evaluated before step i (losses[0] == golden loss). "
        "Per step: zero grads, forward (fp32, model.train(), use_cache=False), HF causal-LM loss with "
        "labels=input_ids, backward, optimizer.step(). No gradient clipping, no LR schedule, no warmup. "
        "Tied embedding/lm_head is ONE parameter (gradient from both uses summed, one Adam state). "
        "All parameters (incl. A_log, D, norms, biases) are in one param group; weight_decay=0 so decay groups "
        "do not matter.",
        "input_ids": "golden.safetensors:input_ids",
        "optimizer": {
            "type": "torch.optim.AdamW",
            "lr": 1e-3,
            "betas": [0.9, 0.999],
            "eps": 1e-8,
            "weight_decay": 0.0,
            "amsgrad": False,
            "maximize": False,
            "foreach": False,
            "bias_correction": True,
        },
        "grad_clip": None,
        "steps": 5,
        "losses": losses,
        "loss_after_5_steps": final,
    }


# --------------------------------------------------------------------------------------
# GPT-NeoX
# --------------------------------------------------------------------------------------
def neox_config(layers, heads, rotary_pct, parallel, intermediate):
    return GPTNeoXConfig(
        vocab_size=96,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        hidden_act="gelu",
        rotary_pct=rotary_pct,
        rotary_emb_base=10000,
        max_position_embeddings=64,
        layer_norm_eps=1e-5,
        use_parallel_residual=parallel,
        tie_word_embeddings=False,
        attention_dropout=0.0,
        hidden_dropout=0.0,
        attention_bias=True,
        bos_token_id=0,
        eos_token_id=0,
    )


def gen_neox(root: Path, name: str, cfg: GPTNeoXConfig, seed: int, ids_seed: int, legacy_config: bool) -> dict:
    torch.manual_seed(seed)
    model = GPTNeoXForCausalLM(cfg).float()
    default_attn = model.config._attn_implementation
    model.set_attn_implementation("eager")
    assert model.config._attn_implementation == "eager"
    perturb_(model, seed + 1000)
    model.eval()
    ids = make_input_ids(ids_seed, cfg.vocab_size)
    folder = root / name
    save_hf(model, folder)
    keys = saved_keys(folder)
    sd_keys = sorted(model.state_dict().keys())
    buffers = sorted(n for n, _ in model.named_buffers())
    renames = {"lm_head.weight": "embed_out.weight"} if "embed_out.weight" in keys else {}
    nmap = param_to_checkpoint_map(model, folder, renames)
    golden = compute_golden(model, ids, nmap)
    # eager vs sdpa agree (sanity)
    with torch.no_grad():
        m2 = copy.deepcopy(model)
        m2.set_attn_implementation("sdpa")
        ls = m2(input_ids=ids, use_cache=False).logits
    sdpa_diff = float((ls - golden["logits"]).abs().max())
    write_golden(folder, golden)
    cfg_json = json.loads((folder / "config.json").read_text())
    if legacy_config:
        # Rewrite config.json the way real Pythia checkpoints spell it (rotary_pct / rotary_emb_base,
        # no rope_parameters) so the C++ loader is tested on both spellings; HF must load it identically.
        legacy = {k: v for k, v in cfg_json.items() if k != "rope_parameters"}
        legacy["rotary_pct"] = cfg_json["rope_parameters"]["partial_rotary_factor"]
        legacy["rotary_emb_base"] = cfg_json["rope_parameters"]["rope_theta"]
        write_json(folder / "config.json", dict(sorted(legacy.items())))
    head = model.config.hidden_size // model.config.num_attention_heads
    facts = {
        "default_attn_implementation_cpu": default_attn,
        "golden_attn_implementation": "eager",
        "max_abs_logit_diff_sdpa_vs_eager": sdpa_diff,
        "module_lm_head_attr": "lm_head (transformers 5 renames checkpoint key embed_out.* <-> lm_head.* on load/save)",
        "checkpoint_head_key": "embed_out.weight" if "embed_out.weight" in keys else "lm_head.weight",
        "model_buffers": buffers,
        "buffers_in_state_dict": sorted(set(sd_keys) & set(buffers)),
        "extra_non_param_keys_in_checkpoint": sorted(set(keys) - set(nmap.values())),
        "head_dim": head,
        "rotary_ndims": int(head * cfg.rope_parameters["partial_rotary_factor"]),
        "save_pretrained_rope_fields": {
            k: cfg_json.get(k) for k in ["rope_parameters", "rotary_pct", "rotary_emb_base", "rope_scaling"] if k in cfg_json
        },
        "config_json_style": "legacy Pythia (rotary_pct, rotary_emb_base; rewritten after save_pretrained)"
        if legacy_config
        else "transformers 5 native (rope_parameters), as written by save_pretrained",
    }
    summary = {
        "architecture": "GPTNeoXForCausalLM",
        "hidden_size": cfg.hidden_size,
        "num_attention_heads": cfg.num_attention_heads,
        "num_hidden_layers": cfg.num_hidden_layers,
        "intermediate_size": cfg.intermediate_size,
        "rotary_pct": cfg.rope_parameters["partial_rotary_factor"],
        "rotary_emb_base": cfg.rope_parameters["rope_theta"],
        "use_parallel_residual": cfg.use_parallel_residual,
        "vocab_size": cfg.vocab_size,
        "max_position_embeddings": cfg.max_position_embeddings,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "hidden_act": cfg.hidden_act,
        "layer_norm_eps": cfg.layer_norm_eps,
    }
    summary_json(folder, name, model, golden, facts, summary)
    verify_reload(GPTNeoXForCausalLM, folder, golden)
    return facts


# --------------------------------------------------------------------------------------
# Independent re-implementation from /work/shared/SPEC.md (float64), read back from disk.
# Confirms that the golden files (HF) agree with the SPEC's equations, incl. gradients.
# --------------------------------------------------------------------------------------
def _load_weights(folder: Path) -> dict[str, torch.Tensor]:
    w = {}
    for f in sorted(folder.glob("model*.safetensors")):
        w.update(load_file(str(f)))
    return w


def spec_mamba_logits(w, cfg, ids):
    emb_key = "backbone.embeddings.weight" if "backbone.embeddings.weight" in w else "backbone.embedding.weight"
    d_state, d_conv = cfg["state_size"], cfg["conv_kernel"]
    h = w[emb_key][ids]  # [B,T,D]
    T = ids.shape[1]

    def rms(x, g):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + cfg["layer_norm_epsilon"]) * g

    for i in range(cfg["num_hidden_layers"]):
        p = lambda n: w.get(f"backbone.layers.{i}.mixer.{n}")  # noqa: E731
        u = rms(h, w[f"backbone.layers.{i}.norm.weight"])
        xz = u @ p("in_proj.weight").T + (p("in_proj.bias") if p("in_proj.bias") is not None else 0)
        d_inner = xz.shape[-1] // 2
        x, z = xz[..., :d_inner], xz[..., d_inner:]
        xp = torch.nn.functional.pad(x.transpose(1, 2), (d_conv - 1, 0))  # [B,Di,T+K-1]
        cw = p("conv1d.weight")[:, 0, :]  # [Di,K]
        x = torch.stack([(xp[:, :, t : t + d_conv] * cw).sum(-1) for t in range(T)], -1) + p("conv1d.bias")[:, None]
        x = torch.nn.functional.silu(x).transpose(1, 2)  # [B,T,Di]
        dbc = x @ p("x_proj.weight").T
        r = dbc.shape[-1] - 2 * d_state
        dt_low, Bm, Cm = dbc[..., :r], dbc[..., r : r + d_state], dbc[..., r + d_state :]
        delta = torch.nn.functional.softplus(dt_low @ p("dt_proj.weight").T + p("dt_proj.bias"))  # [B,T,Di]
        A = -torch.exp(p("A_log"))  # [Di,N]
        st = torch.zeros(x.shape[0], d_inner, d_state, dtype=x.dtype)
        ys = []
        for t in range(T):
            st = torch.exp(delta[:, t, :, None] * A) * st + delta[:, t, :, None] * Bm[:, t, None, :] * x[:, t, :, None]
            ys.append((st * Cm[:, t, None, :]).sum(-1) + p("D") * x[:, t])
        y = torch.stack(ys, 1) * torch.nn.functional.silu(z)
        out = y @ p("out_proj.weight").T + (p("out_proj.bias") if p("out_proj.bias") is not None else 0)
        h = h + out
    hf = rms(h, w["backbone.norm_f.weight"])
    return hf @ w.get("lm_head.weight", w[emb_key]).T  # tied: absent lm_head means the embedding


def spec_neox_logits(w, cfg, ids):
    H, nh = cfg["hidden_size"], cfg["num_attention_heads"]
    hd = H // nh
    rot = int(hd * cfg["rotary_pct"])
    T = ids.shape[1]
    inv = 1.0 / (cfg["rotary_emb_base"] ** (torch.arange(0, rot, 2, dtype=torch.float64) / rot))
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv[None]
    cos, sin = torch.cat([ang, ang], -1).cos(), torch.cat([ang, ang], -1).sin()

    def ln(x, pre):
        return torch.nn.functional.layer_norm(x, (H,), w[pre + ".weight"], w[pre + ".bias"], cfg["layer_norm_eps"])

    def lin(x, pre):
        return x @ w[pre + ".weight"].T + w[pre + ".bias"]

    def rope(q):
        qr, qp = q[..., :rot], q[..., rot:]
        half = rot // 2
        rh = torch.cat([-qr[..., half:], qr[..., :half]], -1)
        return torch.cat([qr * cos + rh * sin, qp], -1)

    mask = torch.full((T, T), float("-inf"), dtype=torch.float64).triu(1)
    x = w["gpt_neox.embed_in.weight"][ids]
    for i in range(cfg["num_hidden_layers"]):
        pre = f"gpt_neox.layers.{i}"

        def attn(u):
            qkv = lin(u, pre + ".attention.query_key_value").view(*u.shape[:2], nh, 3 * hd).transpose(1, 2)
            q, k, v = qkv[..., :hd], qkv[..., hd : 2 * hd], qkv[..., 2 * hd :]
            q, k = rope(q), rope(k)
            a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd) + mask, -1) @ v
            return lin(a.transpose(1, 2).reshape(*u.shape[:2], H), pre + ".attention.dense")

        def mlp(u):
            return lin(torch.nn.functional.gelu(lin(u, pre + ".mlp.dense_h_to_4h")), pre + ".mlp.dense_4h_to_h")

        if cfg["use_parallel_residual"]:
            x = x + attn(ln(x, pre + ".input_layernorm")) + mlp(ln(x, pre + ".post_attention_layernorm"))
        else:
            x = x + attn(ln(x, pre + ".input_layernorm"))
            x = x + mlp(ln(x, pre + ".post_attention_layernorm"))
    x = ln(x, "gpt_neox.final_layer_norm")
    return x @ w["embed_out.weight"].T


def verify_against_spec(root: Path) -> dict:
    """Reload every fixture from disk, recompute logits/loss/grads with the SPEC equations in float64."""
    report = {}
    for name in FIXTURES:
        folder = root / name
        cfgj = json.loads((folder / "config.json").read_text())
        g = load_file(str(folder / "golden.safetensors"))
        w = {k: v.double().requires_grad_(True) for k, v in _load_weights(folder).items()}
        ids = g["input_ids"]
        if name.startswith("mamba"):
            if "d_model" in cfgj:  # original mamba_ssm config
                ssm = {"d_state": 16, "d_conv": 4, **cfgj["ssm_cfg"]}
                cfg = {
                    "state_size": ssm["d_state"],
                    "conv_kernel": ssm["d_conv"],
                    "num_hidden_layers": cfgj["n_layer"],
                    "layer_norm_epsilon": 1e-5,
                }
                # the head is tied: drop the stored copy so its gradient flows into the embedding
                w.pop("lm_head.weight")
            else:
                cfg = cfgj
            logits = spec_mamba_logits(w, cfg, ids)
        else:
            rc = dict(cfgj)
            if "rope_parameters" in rc:
                rc["rotary_pct"] = rc["rope_parameters"]["partial_rotary_factor"]
                rc["rotary_emb_base"] = rc["rope_parameters"]["rope_theta"]
            logits = spec_neox_logits(w, rc, ids)
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1)
        )
        loss.backward()
        dl = float((logits - g["logits"].double()).abs().max())
        dloss = abs(float(loss) - float(g["loss"]))
        grad_keys = {k[5:] for k in g if k.startswith("grad.")}
        assert grad_keys == set(w), (name, grad_keys ^ set(w))
        dg = max(float((w[k].grad - g["grad." + k].double()).abs().max()) for k in grad_keys)
        gmax = max(float(g["grad." + k].abs().max()) for k in grad_keys)
        assert dl < 1e-4 and dloss < 1e-5 and dg < 1e-5 * max(1.0, gmax), (name, dl, dloss, dg)
        report[name] = {"max_logit_diff": dl, "loss_diff": dloss, "max_grad_diff": dg}
    return report


# --------------------------------------------------------------------------------------
def generate(root: Path) -> dict:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    root.mkdir(parents=True, exist_ok=True)
    facts = {}
    facts.update(gen_mamba_family(root))
    facts["gpt_neox-tiny-parallel"] = gen_neox(
        root, "gpt_neox-tiny-parallel", neox_config(2, 4, 0.25, True, 128), seed=3456, ids_seed=44, legacy_config=True
    )
    facts["gpt_neox-tiny-sequential"] = gen_neox(
        root, "gpt_neox-tiny-sequential", neox_config(3, 2, 0.5, False, 64), seed=4567, ids_seed=45, legacy_config=False
    )
    return facts


FIXTURES = [
    "mamba-tiny",
    "mamba-tiny-bias",
    "mamba-tiny-orig",
    "mamba-tiny-sharded",
    "mamba-tiny-bf16",
    "gpt_neox-tiny-parallel",
    "gpt_neox-tiny-sequential",
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(REPO / "tests" / "fixtures"))
    ap.add_argument("--check", action="store_true", help="regenerate into a temp dir and byte-compare with --out")
    args = ap.parse_args()
    out = Path(args.out)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    if args.check:
        with tempfile.TemporaryDirectory() as td:
            generate(Path(td))
            bad = []
            for name in FIXTURES:
                a, b = Path(td) / name, out / name
                names = sorted({p.name for p in a.iterdir()} | {p.name for p in b.iterdir()})
                for n in names:
                    if not (a / n).exists() or not (b / n).exists() or not filecmp.cmp(a / n, b / n, shallow=False):
                        bad.append(f"{name}/{n}")
            if bad:
                print("MISMATCH:", *bad, sep="\n  ")
                sys.exit(1)
            print("OK: regenerated fixtures are byte-identical")
        return
    for name in FIXTURES:
        if (out / name).exists():
            shutil.rmtree(out / name)
    facts = generate(out)
    spec = verify_against_spec(out)
    print("SPEC re-implementation (float64) vs golden:", json.dumps(spec, indent=1))
    total = 0
    for name in FIXTURES:
        sz = folder_size(out / name)
        total += sz
        files = ", ".join(f"{p.name}={p.stat().st_size}" for p in sorted((out / name).iterdir()))
        print(f"{name:28s} {sz/1024:7.1f} KiB  [{files}]")
    print(f"{'total':28s} {total/1024:7.1f} KiB")
    print(json.dumps(facts, indent=1))


if __name__ == "__main__":
    main()
