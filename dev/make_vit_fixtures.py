"""Tiny random-weight ViT encoders and their reference outputs, for tests/test_vit.cpp.

Run with the dev venv (torch 2.11, transformers 5.23, timm 1.0.31, safetensors):
    .venv-dev/bin/python dev/make_vit_fixtures.py

Writes tests/fixtures/vision/<name>/ with the model folder as the reference library saves it
(config.json + model.safetensors) and golden.safetensors:
    pixels            [2, 3, 32, 32]   input at the trained size
    hidden_{i}        [2, T, C]        hidden_states[i] (0 = embeddings, i = after block i),
                                        prefix tokens (CLS) included
    causal_hidden_{L} [2, T, C]        last hidden state with causal self-attention
    pixels_interp     [1, 3, 48, 40]   input at another size (grid 6 x 5)
    interp_hidden_{i} [1, T', C]       hidden states for it (i = L and L - 1), position embeddings
                                        interpolated as the reference does
    final_norm        [2, T, C]        FeatureSelect::final_norm: the encoder's final norm applied
    interp_final_norm [1, T', C]       to every token of hidden_states[L] (see below)
The final norm (absent from eva02-tiny, whose global_pool "avg" leaves timm's `norm` an Identity):
    CLIP    post_layernorm(hidden_states[L]) on ALL tokens (LLaVA-style; Hugging Face itself applies
            post_layernorm only to the pooled class token, its last_hidden_state is hidden_states[L])
    SigLIP  post_layernorm(hidden_states[L]) = Hugging Face's last_hidden_state (asserted)
    EVA-02  timm forward_features (blocks, then `norm`; what Shaking-Up's Eva subclass runs)
Folders:
    clip-tiny         transformers CLIPVisionModel (quick_gelu, pre-LN, class token)
    clip-full-tiny    transformers CLIPModel (vision_config + text tower; golden = vision tower)
    siglip-tiny       transformers SiglipVisionModel with the attention-pooling head
    siglip-full-tiny  transformers SiglipModel
    eva02-tiny        timm eva02_base_patch14_224 layout shrunk through model_args (timm's hub
                      config.json format: architecture + model_args + pretrained_cfg)
    eva02-clip-tiny   timm eva02_base_patch16_clip_224 shrunk the same way: scale_attn_inner (the
                      sub-LN attn.norm before attn.proj) and global_pool "token" (a real final
                      `norm`), as eva02_large_patch14_clip_336 (Shaking-Up's encoder)
Weights are random (N(0, 0.2) for matrices, 1 + N(0, 0.1) for norm scales) so that attention is
far from uniform and every term matters.
"""
import json
import os
import shutil

import torch
from safetensors.torch import load_file, save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "vision")
IMG, PATCH, HID, LAYERS, HEADS = 32, 8, 32, 3, 4


def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and ("norm" in name or "layernorm" in name or "layrnorm" in name) and name.endswith(
                    "weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))


def inputs(seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 3, IMG, IMG, generator=g), torch.randn(1, 3, 48, 40, generator=g)


def causal_mask(t):
    m = torch.full((t, t), torch.finfo(torch.float32).min).triu(1)
    return m.view(1, 1, t, t)


def hf_golden(vm, pixels, pixels_interp, pre_norm):
    """vm: the vision tower (transformers 5: CLIPVisionModel itself, or CLIPModel.vision_model)."""
    out = {"pixels": pixels.contiguous(), "pixels_interp": pixels_interp.contiguous()}
    with torch.no_grad():
        r = vm(pixel_values=pixels, output_hidden_states=True)
        hs = r.hidden_states
        for i, h in enumerate(hs):
            out[f"hidden_{i}"] = h.contiguous()
        L = len(hs) - 1
        ri = vm(pixel_values=pixels_interp, output_hidden_states=True, interpolate_pos_encoding=True)
        for i in (L - 1, L):
            out[f"interp_hidden_{i}"] = ri.hidden_states[i].contiguous()
        # Final norm on every token (vm.post_layernorm is what FeatureSelect::final_norm applies).
        out["final_norm"] = vm.post_layernorm(hs[L]).contiguous()
        out["interp_final_norm"] = vm.post_layernorm(ri.hidden_states[L]).contiguous()
        if not pre_norm:  # SigLIP: last_hidden_state is exactly that
            assert torch.equal(r.last_hidden_state, out["final_norm"])
        else:  # CLIP: last_hidden_state has no final norm; the pooled CLS does
            assert torch.equal(r.last_hidden_state, hs[L])
            assert torch.allclose(r.pooler_output, out["final_norm"][:, 0], atol=1e-6)
        # Causal: the same layers with an additive causal mask (eager attention adds it).
        h = vm.embeddings(pixels)
        if pre_norm:
            h = vm.pre_layrnorm(h)
        mask = causal_mask(h.shape[1])
        for layer in vm.encoder.layers:
            h = layer(h, mask)
            if isinstance(h, tuple):
                h = h[0]
        out[f"causal_hidden_{L}"] = h.contiguous()
    return out


def save_hf(model, name, golden):
    # transformers 5 always writes safetensors.
    d = os.path.join(ROOT, name)
    shutil.rmtree(d, ignore_errors=True)
    model.save_pretrained(d)
    save_file(golden, os.path.join(d, "golden.safetensors"))
    # Self-check: the saved folder reproduces the golden hidden states.
    back = type(model).from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
    tower = getattr(back, "vision_model", back)  # full CLIPModel / SiglipModel: the vision tower
    hs = tower(pixel_values=golden["pixels"], output_hidden_states=True).hidden_states
    assert all(torch.allclose(h, golden[f"hidden_{i}"], atol=1e-5) for i, h in enumerate(hs)), name
    print(name, sorted(os.listdir(d)), sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d)))


def clip():
    from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig, CLIPVisionModel
    vc = dict(hidden_size=HID, intermediate_size=64, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
              image_size=IMG, patch_size=PATCH, hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=16)
    torch.manual_seed(0)
    m = CLIPVisionModel(CLIPVisionConfig(**vc), ).eval()
    m.config._attn_implementation = "eager"
    randomize(m, 1)
    px, pxi = inputs(2)
    save_hf(m, "clip-tiny", hf_golden(m, px, pxi, True))

    tc = CLIPTextConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                        num_attention_heads=2, max_position_embeddings=8, projection_dim=16)
    full = CLIPModel(CLIPConfig(text_config=tc.to_dict(), vision_config=vc, projection_dim=16)).eval()
    full.config._attn_implementation = "eager"
    randomize(full, 3)
    save_hf(full, "clip-full-tiny", hf_golden(full.vision_model, px, pxi, True))


def siglip():
    from transformers import SiglipConfig, SiglipModel, SiglipTextConfig, SiglipVisionConfig, SiglipVisionModel
    vc = dict(hidden_size=HID, intermediate_size=64, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
              image_size=IMG, patch_size=PATCH, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6,
              vision_use_head=True)
    torch.manual_seed(0)
    m = SiglipVisionModel(SiglipVisionConfig(**vc)).eval()
    m.config._attn_implementation = "eager"
    randomize(m, 4)
    px, pxi = inputs(5)
    save_hf(m, "siglip-tiny", hf_golden(m, px, pxi, False))

    tc = SiglipTextConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                          num_attention_heads=2, max_position_embeddings=8)
    full = SiglipModel(SiglipConfig(text_config=tc.to_dict(), vision_config=vc)).eval()
    full.config._attn_implementation = "eager"
    randomize(full, 6)
    save_hf(full, "siglip-full-tiny", hf_golden(full.vision_model, px, pxi, False))


def eva02(arch, name, seed):
    import timm
    from timm.models._hub import save_for_hf
    args = dict(img_size=IMG, patch_size=PATCH, embed_dim=HID, depth=LAYERS, num_heads=2,
                ref_feat_shape=(3, 3), num_classes=0)
    torch.manual_seed(0)
    m = timm.create_model(arch, pretrained=False, **args).eval()
    randomize(m, seed)
    # Same weights, dynamic input size (resampled abs pos embed + rope for the new grid).
    md = timm.create_model(arch, pretrained=False, dynamic_img_size=True, **args).eval()
    md.load_state_dict(m.state_dict())
    px, pxi = inputs(seed + 1)
    g = {"pixels": px.contiguous(), "pixels_interp": pxi.contiguous()}
    with torch.no_grad():
        x = m.patch_embed(px)
        x, _ = m._pos_embed(x)
        g["hidden_0"] = m.norm_pre(x).contiguous()

        def blocks(model, pixels, is_causal=False):
            inter = model.forward_intermediates(pixels, indices=list(range(LAYERS)), return_prefix_tokens=True,
                                                output_fmt="NLC", intermediates_only=True, is_causal=is_causal)
            return [torch.cat([pre, sp], 1).contiguous() for sp, pre in inter]

        for i, h in enumerate(blocks(m, px)):
            g[f"hidden_{i + 1}"] = h
        g[f"causal_hidden_{LAYERS}"] = blocks(m, px, True)[-1]
        hi = blocks(md, pxi)
        g[f"interp_hidden_{LAYERS - 1}"] = hi[-2]
        g[f"interp_hidden_{LAYERS}"] = hi[-1]
        if isinstance(m.norm, torch.nn.Identity):
            # global_pool "avg": fc_norm after pooling, forward_features has no final norm, and
            # forward_intermediates agrees with it.
            assert m.global_pool == "avg"
            assert torch.allclose(m.forward_features(px), g[f"hidden_{LAYERS}"])
        else:
            assert m.global_pool == "token" and isinstance(m.fc_norm, torch.nn.Identity)
            assert all(not isinstance(b.attn.norm, torch.nn.Identity) for b in m.blocks)  # scale_attn_inner
            g["final_norm"] = m.forward_features(px).contiguous()
            g["interp_final_norm"] = md.forward_features(pxi).contiguous()
            assert torch.allclose(m.norm(g[f"hidden_{LAYERS}"]), g["final_norm"], atol=1e-6)
    d = os.path.join(ROOT, name)
    shutil.rmtree(d, ignore_errors=True)
    save_for_hf(m, d, model_args=dict(args, ref_feat_shape=[3, 3]), safe_serialization=True)
    save_file(g, os.path.join(d, "golden.safetensors"))
    # Self-check: timm rebuilds the model from the saved config.json (architecture + model_args).
    cfg = json.load(open(os.path.join(d, "config.json")))
    back = timm.create_model(cfg["architecture"], pretrained=False, **cfg["model_args"]).eval()
    back.load_state_dict(load_file(os.path.join(d, "model.safetensors")))
    assert torch.equal(back.forward_features(px), g.get("final_norm", g[f"hidden_{LAYERS}"]))
    print(name, sorted(os.listdir(d)), sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d)),
          json.load(open(os.path.join(d, "config.json"))))


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    clip()
    siglip()
    eva02("eva02_base_patch14_224", "eva02-tiny", 7)
    eva02("eva02_base_patch16_clip_224", "eva02-clip-tiny", 9)
