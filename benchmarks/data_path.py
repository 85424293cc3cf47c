"""The data path at LLaVA's sizes: conversations shaped like LLaVA-1.5's SFT mix, checked as `train` checks them.

    python benchmarks/data_path.py --records 10000                      # writes the data once, then measures
    python benchmarks/data_path.py --records 100000 --image-tokens 729  # SigLIP-384's 729 image tokens

The data: N records of 1-4 question/answer pairs, the first question opening with `<image>`, one image in
`--records-per-image` records (LLaVA-1.5's mix names about 100K distinct COCO/GQA/OCR images for 665K records),
640x480 JPEGs. Each step runs in a fresh process and prints its wall and CPU seconds and peak resident memory:
  json.load      the floor: parsing the file with the standard library;
  check cold     `load_conversations` with an empty sample cache (what `train` runs before step 1);
  check warm     the same with the cache the cold run wrote (a restart, or the next stage on the same data);
  fingerprint    the images' fingerprint, asked 10 times (a dry run asks once per stage and status check);
  plan tokens    `llava-ckd plan --sample 0`'s exact token count of the file;
  plan sampled   `llava-ckd plan`'s default: 50,000 records encoded, the rest estimated (exact below that).
The figures depend on the CPU and its kernel set; the header names them.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TEXT = ("what is the colour of the object on the left side of the table and why does it matter here in this "
        "scene there are several people standing near a red bus while a dog runs across the street")
WORDS = TEXT.split()
STEPS = ("json.load", "check cold", "check warm", "fingerprint", "plan tokens", "plan sampled")


def sentence(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))


def write_data(folder: Path, records: int, records_per_image: int, seed: int = 0) -> Path:
    """LLaVA-mix-shaped conversations and their JPEGs in `folder` (kept when already written)."""
    from PIL import Image, ImageDraw

    conversations = folder / "conversations.json"
    if conversations.is_file():
        return conversations
    rng = random.Random(seed)
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    distinct = max(1, records // records_per_image)
    for index in range(distinct):
        image = Image.new("RGB", (640, 480), (rng.randrange(256), rng.randrange(256), rng.randrange(256)))
        draw = ImageDraw.Draw(image)
        for _ in range(6):
            x, y = rng.randrange(600), rng.randrange(440)
            draw.rectangle((x, y, x + rng.randrange(20, 200), y + rng.randrange(20, 200)),
                           fill=(rng.randrange(256), rng.randrange(256), rng.randrange(256)))
        image.save(images / f"{index:06d}.jpg", quality=85)
    rows = []
    for index in range(records):
        turns = []
        for pair in range(rng.randint(1, 4)):
            question = sentence(rng, 6, 20) + "?"
            turns += [{"from": "human", "value": ("<image>\n" if pair == 0 else "") + question},
                      {"from": "gpt", "value": sentence(rng, 3, 60) + "."}]
        rows.append({"id": str(index), "image": f"{rng.randrange(distinct):06d}.jpg", "conversations": turns})
    conversations.write_text(json.dumps(rows))
    return conversations


def processor(folder: Path, image_tokens: int):
    """A LLaVA processor whose image expansion is `image_tokens` tokens (SigLIP at 384 px gives 729), with a
    tokenizer trained on the conversations."""
    from transformers import LlavaProcessor, SiglipImageProcessorPil

    from llava_ckd.data.conversations import conversation_corpus
    from llava_ckd.models.tokenizer import train_tokenizer

    side = round(image_tokens ** 0.5)
    if side * side != image_tokens:
        raise SystemExit(f"--image-tokens must be a square (a patch grid), got {image_tokens}")
    tokenizer_dir = folder / "tokenizer"
    if not (tokenizer_dir / "tokenizer.json").is_file():
        train_tokenizer(conversation_corpus([folder / "conversations.json"])[:20000]).save_pretrained(tokenizer_dir)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    return LlavaProcessor(image_processor=SiglipImageProcessorPil(size={"height": side * 14, "width": side * 14}),
                          tokenizer=tokenizer, patch_size=14, vision_feature_select_strategy="full",
                          num_additional_image_tokens=0, chat_template=tokenizer.chat_template)


def run_step(step: str, folder: Path, image_tokens: int, max_length: int) -> None:
    """One step in this process, timed after its imports and set-up; prints one JSON line of its figures."""
    conversations, images = folder / "conversations.json", folder / "images"
    if step != "json.load":  # the floor imports nothing
        from llava_ckd.cli import PLAN_SAMPLE
        from llava_ckd.data.conversations import images_of, load_conversations
        from llava_ckd.plan.tokens import count_tokens

        processor(folder, image_tokens)
    work = {
        "json.load": lambda: json.loads(conversations.read_bytes()),
        "check cold": lambda: load_conversations(conversations, images, processor(folder, image_tokens), max_length),
        "check warm": lambda: load_conversations(conversations, images, processor(folder, image_tokens), max_length),
        "fingerprint": lambda: [images_of(conversations, images) for _ in range(10)],
        "plan tokens": lambda: count_tokens(conversations, processor(folder, image_tokens).tokenizer, image_tokens,
                                            max_length),
        "plan sampled": lambda: count_tokens(conversations, processor(folder, image_tokens).tokenizer, image_tokens,
                                             max_length, PLAN_SAMPLE),
    }[step]
    started_wall, started = time.perf_counter(), os.times()
    work()
    ended = os.times()
    print(json.dumps({"step": step, "wall_s": time.perf_counter() - started_wall,
                      "cpu_s": (ended.user - started.user) + (ended.system - started.system),
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--records-per-image", type=int, default=7)
    parser.add_argument("--image-tokens", type=int, default=729)
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--data", type=Path, help="where the data is written (default: a folder per N in /tmp)")
    parser.add_argument("--step", choices=STEPS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    folder = args.data or Path(tempfile.gettempdir()) / f"llava-mix-{args.records}"
    if args.step:
        run_step(args.step, folder, args.image_tokens, args.max_length)
        return

    write_data(folder, args.records, args.records_per_image)  # imports nothing heavy: the children's peak RSS
    size_mb = (folder / "conversations.json").stat().st_size / 2**20  # is their own (Linux keeps it over exec)
    environment = subprocess.run([sys.executable, "-c", "import torch; print(torch.__version__, "
                                  "torch.backends.cpu.get_cpu_capability(), torch.get_num_threads())"],
                                 capture_output=True, text=True, check=True).stdout.split()
    print(f"{args.records:,} records, {size_mb:.0f} MB of JSON, {args.image_tokens} image tokens per image; "
          f"torch {environment[0]}, CPU kernels {environment[1]}, {environment[2]} threads, {os.cpu_count()} CPUs; "
          "timed after imports and set-up")
    print(f"{'step':<14}{'wall s':>10}{'CPU s':>10}{'peak RSS MB':>14}{'per record ms':>15}")
    environment = os.environ | {"LLAVA_CKD_CACHE": str(folder / f"cache-{args.image_tokens}")}
    shutil.rmtree(environment["LLAVA_CKD_CACHE"], ignore_errors=True)
    for step in STEPS:
        command = [sys.executable, __file__, "--step", step, "--data", str(folder), "--records", str(args.records),
                   "--image-tokens", str(args.image_tokens), "--max-length", str(args.max_length)]
        done = subprocess.run(command, env=environment, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"{step} failed:\n{done.stderr[-3000:]}")
        figures = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{step:<14}{figures['wall_s']:>10.1f}{figures['cpu_s']:>10.1f}{figures['peak_rss_mb']:>14.0f}"
              f"{1000 * figures['wall_s'] / args.records:>15.3f}")


if __name__ == "__main__":
    main()
