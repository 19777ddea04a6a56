#!/usr/bin/env bash
# A tour of the engine, command by command on small models made on the spot (nothing is
# downloaded; random weights, so the text is gibberish, but every step is the real path a
# Hugging Face checkpoint folder takes): write Mamba and Pythia folders in HF format with a BPE
# tokenizer, inspect, tokenize, score a text, generate (streaming), and benchmark briefly; then the
# vision side: train a small MambaOut classifier on synthetic images, classify, evaluate, bench;
# then a tiny vision-language model: built-in scenes, a short training run, evaluation, chat.
set -euo pipefail
cd "$(dirname "$0")/.."
M=build/mambavl
OUT=${MAMBAVL_TOUR_DIR:-out/tour}
TOK=tests/fixtures/tokenizer/bpe-small/tokenizer.json
TEXT="The state space model reads the image patches one row at a time."
mkdir -p "$OUT"
for preset in mamba-tiny pythia-tiny; do
  echo "== mambavl init --preset $preset (config.json + model.safetensors + tokenizer.json)"
  $M init --preset $preset --seed 1 --tokenizer $TOK --out "$OUT/$preset" --overwrite
  $M info --model "$OUT/$preset"
done
echo "== mambavl tokenize"
$M tokenize --model "$OUT/mamba-tiny" --text "$TEXT" | head -5
for preset in mamba-tiny pythia-tiny; do
  echo "== mambavl perplexity ($preset; random weights: ppl is near the vocabulary size)"
  $M perplexity --model "$OUT/$preset" --text "$TEXT"
  echo "== mambavl generate ($preset, sampling, streamed)"
  $M generate --model "$OUT/$preset" --prompt "The model" --max-new-tokens 24 --temperature 0.9 --top-p 0.95 --seed 1 --stats
done
echo "== mambavl bench scan (fused vs reference selective scan, short run)"
$M bench scan --dim 256 --len 256 --repeats 2
echo "== mambavl train-classifier (a small MambaOut on the built-in synthetic shapes x colours)"
$M train-classifier --arch mambaout --synthetic 256 --num-classes 4 --epochs 3 --no-progress --overwrite --out "$OUT/mambaout-cls"
echo "== mambavl classify (top classes of a photo; the model only knows coloured shapes)"
$M classify --model "$OUT/mambaout-cls/best" tests/fixtures/images/photo_64x48.jpg
echo "== mambavl eval-classifier (the held-out 10 % of the same synthetic data)"
$M eval-classifier --model "$OUT/mambaout-cls/best" --synthetic 256 --no-progress
echo "== mambavl bench vision (short run: two connectors, two encoders)"
$M bench vision --iters 1 --types mlp,vss_l2 --scans bsm --cases 16x16-768 --encoders mambaout-femto,clip-vit-b16 --sizes 224
echo "== mambavl make-data scenes (built-in synthetic scenes: PNG + LLaVA JSON + grounding JSONL + tokenizer)"
$M make-data scenes --n 8 --seed 0 --out "$OUT/scenes"
echo "== mambavl train (a tiny Mamba-VL from scratch: a short run of configs/mamba-vl-tiny-1-captions.toml)"
rm -rf "$OUT/mamba-vl-tiny"
$M train --config configs/mamba-vl-tiny-1-captions.toml --set train.stages.0.steps=40 --set train.batch_size=8 \
  --set eval.n=30 --set train.progress=false --set train.save_every=0 --out "$OUT/mamba-vl-tiny"
$M info --model "$OUT/mamba-vl-tiny/final"
echo "== mambavl eval (held-out one-object scenes: caption CIDEr-D; 40 steps is far too few to learn much)"
$M eval --model "$OUT/mamba-vl-tiny/final" --scenes 30 --max-objects 1 --task caption --quiet --out "$OUT/mamba-vl-tiny/eval"
echo "== mambavl chat (a caption of a scene, streamed)"
$M chat --model "$OUT/mamba-vl-tiny/final" --image "$OUT/scenes/images/scene_000001.png" --task caption \
  --greedy --max-new-tokens 12
echo "tour done: see 'build/mambavl --help'; full benchmarks: 'build/mambavl bench lm', 'bench scan', 'bench vision', 'bench vlm', 'bench train'; tiny VLM run files: configs/"
