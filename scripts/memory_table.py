"""Memory per GPU of the paper's cascade under DDP, DeepSpeed ZeRO-2/ZeRO-3 and FSDP: the tables of docs/memory.md.

    python scripts/memory_table.py                       # print the tables and the worked arithmetic (Markdown)
    python scripts/memory_table.py --batch 2 --seq 1024  # other samples per GPU / padded lengths, printed only
    python scripts/memory_table.py --write               # also replace the generated part of docs/memory.md

The rules are `llava_ckd.plan.memory`'s (the ones `llava-ckd plan` applies to any recipe); this script only lays
them out for the paper's models side by side, engine by engine. Setting: SigLIP-so400m-patch14-384 + Qwen2.5
(Teacher 7B, TA 3B, Students 0.5B and 1.5B), bf16 on 8 GPUs of 80 GB, LLaVA-1.5 fine-tuning batch (16 samples of up
to 2,048 tokens per GPU, 729 image tokens per image), response and visual-token KD with an online Teacher.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from llava_ckd.models.published import QWEN25_TOKENIZER_TOKENS, SIGLIP_SO400M
from llava_ckd.models.shapes import ModelShape, shape_of
from llava_ckd.models.source import ModelSource
from llava_ckd.plan.memory import ENGINES, GB, Step, activations, memory, model_states, total, working_copies

GPUS = 8
GPU_GB = 80.0
BATCH = 16
"""Samples per GPU: LLaVA-1.5 / LLaVA-KD fine-tuning, global batch 128 on 8 GPUs."""
SEQ = 2048
"""Tokens per sample at most; batches are padded to their longest sample, so this is the worst case."""
RECIPE_BATCH = {"SFT": 4, "DFT": 2}
"""Samples per GPU in configs/paper/*.yaml (with gradient accumulation to the same global batch of 128)."""
TRAINED = ("projector", "llm")
NAMES = {"ddp": "DDP", "zero2": "ZeRO-2", "zero3": "ZeRO-3", "fsdp": "FSDP"}
QWEN = {size: f"Qwen/Qwen2.5-{size}-Instruct" for size in ("0.5B", "1.5B", "3B", "7B")}

DOC = Path(__file__).resolve().parents[1] / "docs" / "memory.md"
BEGIN = "<!-- memory_table.py: begin (generated, do not edit by hand) -->"
END = "<!-- memory_table.py: end -->"


@cache
def shape(size: str) -> ModelShape:
    return shape_of(ModelSource(vision=SIGLIP_SO400M, llm=QWEN[size]))


@dataclass(frozen=True)
class Stage:
    name: str
    trained: str
    """Size of the model that trains (projector + LLM; its vision tower is frozen)."""
    teacher: str | None = None
    """Size of the online Teacher, frozen on the GPU beside it."""
    cached: bool = False

    @property
    def kind(self) -> str:
        return "DFT" if self.teacher is not None or self.cached else "SFT"

    def step(self, checkpointing: bool, seq: int = SEQ, batch: int = BATCH) -> Step:
        return Step(trained=TRAINED, batch=batch, seq=seq, precision="bf16", checkpointing=checkpointing,
                    teacher=shape(self.teacher) if self.teacher else None, cached=self.cached,
                    visual_kd=self.teacher is not None, vocab=QWEN25_TOKENIZER_TOKENS)


STAGES = (
    Stage("Teacher 7B SFT", "7B"),
    Stage("TA 3B SFT", "3B"),
    Stage("Student 0.5B DFT ← TA 3B (online)", "0.5B", teacher="3B"),
    Stage("Student 0.5B DFT ← Teacher 7B (online)", "0.5B", teacher="7B"),
    Stage("Student 0.5B DFT, cached signals", "0.5B", cached=True),
    Stage("Student 1.5B DFT ← TA 3B (online)", "1.5B", teacher="3B"),
    Stage("Student 1.5B DFT ← Teacher 7B (online)", "1.5B", teacher="7B"),
    Stage("Student 1.5B DFT, cached signals", "1.5B", cached=True),
)
STAGE = {stage.name: stage for stage in STAGES}


def stage_total(stage: Stage, engine: str, checkpointing: bool, seq: int = SEQ, batch: int = BATCH) -> float:
    return total(shape(stage.trained), stage.step(checkpointing, seq, batch), engine, GPUS)


def gb(value: float) -> str:
    return f"{value / GB:.2f}"


def mark(value: float) -> str:
    """GB with one decimal, bold and flagged when it exceeds the 80 GB of one GPU."""
    text = f"{value / GB:.1f}"
    return f"**{text}** ✗" if value > GPU_GB * GB else text


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table: the first column left-aligned, the others right-aligned."""
    rule = ["---"] + ["---:"] * (len(header) - 1)
    return ["| " + " | ".join(cells) + " |" for cells in (header, rule, *rows)]


def parameter_table() -> list[str]:
    rows = []
    for size in QWEN:
        m = shape(size)
        trained = m.count(TRAINED)
        rows.append([f"Qwen2.5-{size}", f"{m.parts['vision']:,}", f"{m.parts['projector']:,}", f"{m.parts['llm']:,}",
                     f"{trained:,}", f"{m.total:,}", f"{m.head_rows:,} ({'tied' if m.tied else 'untied'})"])
    return table(["LLM", "vision tower (frozen)", "projector", "LLM incl. head", "trained (projector + LLM)",
                  "total", "LM head rows"], rows)


def states_table() -> list[str]:
    rows = []
    for stage in STAGES:
        model, step = shape(stage.trained), stage.step(False)
        teacher = f"{shape(stage.teacher).total / 1e9:.3f}B" if stage.teacher else "–"
        rows.append([stage.name, f"{model.count(TRAINED) / 1e9:.3f}B", f"{model.parts['vision'] / 1e9:.3f}B", teacher]
                    + [mark(sum(t.bytes for t in model_states(model, step, e, GPUS).values())) for e in ENGINES])
    return table(["stage", "trained params", "frozen tower", "online Teacher", *NAMES.values()], rows)


def working_table() -> list[str]:
    def working(stage: Stage, engine: str, checkpointing: bool) -> str:
        terms = working_copies(shape(stage.trained), stage.step(checkpointing), engine, GPUS)
        return gb(sum(t.bytes for t in terms.values()))

    rows = [[stage.name, f"{working(stage, 'ddp', False)} / {working(stage, 'ddp', True)}"]
            + [working(stage, engine, False) for engine in ENGINES[1:]] for stage in STAGES]
    return table(["stage", "DDP (without / with checkpointing)", *list(NAMES.values())[1:]], rows)


def activation_table(seq: int, batch: int) -> list[str]:
    rows = []
    for stage in STAGES:
        model = shape(stage.trained)
        a, ckpt = activations(model, stage.step(False, seq, batch)), activations(model, stage.step(True, seq, batch))
        naive = 4.0 * batch * seq * (model.head_rows + (shape(stage.teacher).head_rows if stage.teacher else 0))
        rows.append([stage.name, gb(a["layers"].bytes), gb(ckpt["layers"].bytes), gb(a["projector"].bytes),
                     gb(a["teacher forward"].bytes) if stage.teacher else "–", gb(naive), gb(a["heads"].bytes)])
    return table(["stage", "LLM layers", "LLM layers, checkpointed", "projector", "Teacher forward",
                  "logits, naive (one fp32 B·L·V per model)", "logits, fused heads"], rows)


def total_table(seq: int, batch: int | None) -> list[str]:
    """Totals per engine, without / with checkpointing; `batch` None: the recipes' samples per GPU."""
    rows = []
    for stage in STAGES:
        b = RECIPE_BATCH[stage.kind] if batch is None else batch
        label = stage.name if batch is not None else f"{stage.name} ({b} per GPU)"
        rows.append([label] + [f"{mark(stage_total(stage, e, False, seq, b))} / "
                               f"{mark(stage_total(stage, e, True, seq, b))}" for e in ENGINES])
    return table(["stage", *NAMES.values()], rows)


LABELS = {
    "trained": "trained model states", "frozen": "frozen vision tower", "teacher": "online Teacher weights",
    "engine": "engine working copies (estimate)", "teacher gathered": "Teacher weights gathered while it runs "
    "(estimate)", "layers": "LLM layer activations (estimate)", "projector": "projector activations (estimate)",
    "teacher forward": "Teacher forward (estimate)", "heads": "logits, fused heads (estimate)",
}


def arithmetic(stage: Stage, engine: str) -> list[str]:
    """The per-term arithmetic of one (stage, engine) cell at the default batch, as Markdown: each term's formula
    as `llava_ckd.plan.memory` states it."""
    model = shape(stage.trained)
    lines = [f"**{stage.name}, {NAMES[engine]}**", ""]
    for checkpointing in (False, True):
        terms = memory(model, stage.step(checkpointing), engine, GPUS)
        for name, term in terms.items():
            if checkpointing and name not in ("engine", "layers"):
                continue
            if term.bytes == 0 and name in ("teacher", "teacher gathered", "teacher forward"):
                continue
            when = ", with checkpointing" if checkpointing else ""
            lines.append(f"- {LABELS[name]}{when}: {term.formula} B = {gb(term.bytes)} GB")
    lines.append(f"- total: {gb(stage_total(stage, engine, False))} GB without checkpointing, "
                 f"{gb(stage_total(stage, engine, True))} GB with it")
    return lines


WORKED = (
    ("Student 0.5B DFT ← Teacher 7B (online)", "ddp"),
    ("Student 0.5B DFT ← Teacher 7B (online)", "zero2"),
    ("Student 0.5B DFT ← Teacher 7B (online)", "zero3"),
    ("Student 0.5B DFT ← Teacher 7B (online)", "fsdp"),
    ("Teacher 7B SFT", "zero3"),
)


def render(seq: int = SEQ, batch: int = BATCH) -> str:
    """The generated part of docs/memory.md (at the defaults); other values give the tables 1 to 4 only."""
    documented = (seq, batch) == (SEQ, BATCH)
    parts = [
        f"Computed by `python scripts/memory_table.py` (the rules of `llava_ckd.plan.memory`) for {GPUS} GPUs of "
        f"{GPU_GB:.0f} GB and {batch} samples of {seq:,} tokens per GPU ({batch * seq:,} tokens, "
        f"{shape('0.5B').image_tokens} of each sample's from its image). GB = 10⁹ bytes. **Bold ✗**: over "
        f"{GPU_GB:.0f} GB.",
        "",
        "### Parameters (exact, counted on the meta device)",
        "",
        *parameter_table(),
        "",
        "### 1. Model states per GPU, GB (exact, given the byte rules)",
        "",
        "The trained model's weights, gradients and AdamW states + its frozen vision tower + the online Teacher's "
        "weights.",
        "",
        *states_table(),
        "",
        "### 2. Engine working copies per GPU, GB (estimate)",
        "",
        *working_table(),
        "",
        "### 3. Activations and logits per GPU, GB (estimate, the same under every engine)",
        "",
        *activation_table(seq, batch),
        "",
        "### 4. Total per GPU, GB: without / with gradient checkpointing",
        "",
        "Tables 1 + 2 + LLM layers + projector + Teacher forward + logits as the code runs, all added as if live "
        "at once.",
        "",
        *total_table(seq, batch),
        "",
    ]
    if documented:
        parts += [
            f"### 4b. The same at configs/paper's samples per GPU (SFT {RECIPE_BATCH['SFT']}, DFT "
            f"{RECIPE_BATCH['DFT']}; gradient accumulation keeps the global batch at 128)",
            "",
            *total_table(seq, None),
            "",
            "### 5. The arithmetic, term by term",
            "",
        ]
        for name, engine in WORKED:
            parts += arithmetic(STAGE[name], engine) + [""]
    return "\n".join(parts).rstrip() + "\n"


def write(doc: Path = DOC) -> None:
    """Replace what lies between the markers in `doc` with `render()`."""
    text = doc.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{doc} lacks the markers {BEGIN!r} and {END!r}")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(f"{head}{BEGIN}\n{render()}{END}{tail}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq", type=int, default=SEQ, help=f"padded tokens per sample (default {SEQ})")
    parser.add_argument("--batch", type=int, default=BATCH, help=f"samples per GPU (default {BATCH})")
    parser.add_argument("--write", action="store_true", help=f"also update the generated part of {DOC}")
    args = parser.parse_args(argv)
    if args.write and (args.seq, args.batch) != (SEQ, BATCH):
        parser.error(f"--write keeps the documented setting: leave --seq at {SEQ} and --batch at {BATCH}")
    print(render(args.seq, args.batch), end="")
    if args.write:
        write()


if __name__ == "__main__":
    main()
