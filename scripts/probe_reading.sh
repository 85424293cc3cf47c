#!/usr/bin/env bash
# Does one model learn to read the image within a step budget? Pretrain on captions, fine-tune on the answers,
# then score on val with the vision-use check (blank and shuffled images).
#
#   bash scripts/probe_reading.sh NAME PRETRAIN_STEPS SFT_STEPS PRESET [LR] [DATA]
#   bash scripts/probe_reading.sh small-p150 150 1000 ladder-small 2e-3 runs/uncertain-data
#
# Writes runs/probe-read/NAME/ (stage configs, checkpoints, answers) and prints the val result. One thread.
set -euo pipefail
name=$1 pretrain=$2 sft=$3 preset=$4 lr=${5:-2e-3} data=${6:-runs/uncertain-data}
out=runs/probe-read/$name
mkdir -p "$out"
cat > "$out/pretrain.yaml" <<YAML
kind: pretrain
model: {preset: $preset, tokenizer: $data/tokenizer, vision_init: $data/vision}
data: {conversations: $data/train/captions.json, images: $data/train/images, max_length: 256}
output_dir: $out/pretrain
train: [projector, llm]
learning_rate: 1.0e-3
batch_size: 32
max_steps: $pretrain
save_steps: 100000
logging_steps: 50
seed: 0
YAML
cat > "$out/sft.yaml" <<YAML
kind: sft
model: {path: $out/pretrain/final}
data: {conversations: $data/train/train.json, images: $data/train/images, max_length: 256}
output_dir: $out/sft
train: [projector, llm]
learning_rate: $lr
batch_size: 32
max_steps: $sft
save_steps: 100000
logging_steps: 100
seed: 0
YAML
export OMP_NUM_THREADS=1
llava=${LLAVA_CKD:-.venv/bin/llava-ckd}
"$llava" train "$out/pretrain.yaml" > "$out/train.log" 2>&1
"$llava" train "$out/sft.yaml" >> "$out/train.log" 2>&1
"$llava" eval --model "$out/sft/final" --benchmark synthetic --data "$data/val" --out "$out/eval" --batch-size 100 \
    --vision-check 2>/dev/null
