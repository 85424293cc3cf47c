"""Memory per GPU of the paper's cascade under DDP, DeepSpeed ZeRO-2/ZeRO-3 and FSDP: computed, not measured.

    python scripts/memory_table.py                       # print the tables and the worked arithmetic (Markdown)
    python scripts/memory_table.py --batch 2 --seq 1024  # other samples per GPU / padded lengths, printed only
    python scripts/memory_table.py --write               # also replace the generated part of docs/memory.md

Setting: SigLIP-so400m-patch14-384 + Qwen2.5 (Teacher 7B, TA 3B, Students 0.5B and 1.5B), bf16 on 8 GPUs of
80 GB, LLaVA-1.5 fine-tuning batch (16 samples of up to 2,048 tokens per GPU, 729 image tokens per image).
Parameter counts are exact: each model is instantiated from `llava_ckd.models.published` on the meta device.
Model states follow the byte rules of docs/memory.md exactly; the engines' working copies, the activations and
the logits are stated estimates, kept in tables of their own.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from functools import cache
from pathlib import Path

GB = 1e9
GPUS = 8
GPU_GB = 80.0
BATCH = 16
"""Samples per GPU: LLaVA-1.5 / LLaVA-KD fine-tuning, global batch 128 on 8 GPUs."""
SEQ = 2048
"""Tokens per sample at most; batches are padded to their longest sample, so this is the worst case."""
RECIPE_BATCH = {"SFT": 4, "DFT": 2}
"""Samples per GPU in configs/paper/*.yaml (with gradient accumulation to the same global batch of 128)."""
IMAGE_TOKENS = 729
"""SigLIP-so400m-patch14-384: (384 / 14)² patches, one token each; one image per sample."""
FSDP_UNITS = ("Qwen2DecoderLayer", "SiglipEncoderLayer")
"""The layer classes configs/accelerate/fsdp.yaml wraps (FSDP2 units; the rest forms the root unit)."""
SHARED_VOCAB = 151_665
"""The Qwen2.5 tokenizer's tokens: the fused KD head slices both heads to these rows."""
HEAD_CHUNK = 256
"""Rows of the fused LM head per chunk (`llava_ckd.distill.heads.DEFAULT_CHUNK_SIZE`)."""
ENGINES = ("DDP", "ZeRO-2", "ZeRO-3", "FSDP")
SHARDED = ("ZeRO-3", "FSDP")
"""Engines that shard the parameters (so also the frozen tower and the online Teacher) over the GPUs."""

VISION = "google/siglip-so400m-patch14-384"
QWEN = {size: f"Qwen/Qwen2.5-{size}-Instruct" for size in ("0.5B", "1.5B", "3B", "7B")}

DOC = Path(__file__).resolve().parents[1] / "docs" / "memory.md"
BEGIN = "<!-- memory_table.py: begin (generated, do not edit by hand) -->"
END = "<!-- memory_table.py: end -->"


@dataclass(frozen=True)
class Shape:
    """Exact parameter counts of one VLM (SigLIP-so400m + projector + Qwen2.5 LLM) and the LLM's widths."""

    size: str
    vision: int
    """Vision tower (frozen in every stage here)."""
    projector: int
    llm: int
    """Language model with its embeddings, plus the LM head when it is not tied to them."""
    input_embedding: int
    hidden: int
    kv_hidden: int
    intermediate: int
    layers: int
    head_rows: int
    """Rows of the LM head (151,936, or 152,064 for 7B)."""
    tied: bool
    largest_module: int
    """Most parameters held directly by one module (DeepSpeed's "largest layer": the embedding or the head)."""
    decoder_layer: int
    """Parameters of one Qwen2 decoder layer."""
    fsdp_root: int
    """Parameters outside FSDP's layer units: embeddings, LM head, projector, the vision tower's non-layer parts."""
    fsdp_root_trained: int
    fsdp_unit: int
    """Parameters of the largest layer unit (a Qwen2 decoder layer, or a SigLIP encoder layer for the 0.5B)."""

    @property
    def trained(self) -> int:
        """Projector + LLM: what SFT and DFT train."""
        return self.projector + self.llm

    @property
    def total(self) -> int:
        return self.vision + self.projector + self.llm

    def autocast_cast(self, checkpointing: bool) -> int:
        """Trained parameters whose bf16 autocast copies autograd keeps: all but an untied input embedding (a
        lookup); with checkpointing, the decoder layers' copies only for the one layer being recomputed."""
        cast = self.trained - (0 if self.tied else self.input_embedding)
        return cast - (self.layers - 1) * self.decoder_layer if checkpointing else cast


@cache
def shape(size: str) -> Shape:
    """Count the parameters of SigLIP-so400m + Qwen2.5-`size` by building the model on the meta device."""
    import torch
    from transformers import LlavaForConditionalGeneration

    from llava_ckd.models.published import QWEN25_TOKENIZER_TOKENS, llava_config

    config = llava_config(VISION, QWEN[size], QWEN25_TOKENIZER_TOKENS)
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)

    def count(module: torch.nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())  # a tied parameter is listed once

    vision = count(model.model.vision_tower)
    projector = count(model.model.multi_modal_projector)
    units = {name: count(m) for name, m in model.named_modules() if type(m).__name__ in FSDP_UNITS}
    outside = {name: p for name, p in model.named_parameters() if not any(name.startswith(u + ".") for u in units)}
    text = config.text_config
    return Shape(
        size=size,
        vision=vision,
        projector=projector,
        llm=count(model) - vision - projector,
        input_embedding=model.get_input_embeddings().weight.numel(),
        hidden=text.hidden_size,
        kv_hidden=text.num_key_value_heads * text.hidden_size // text.num_attention_heads,
        intermediate=text.intermediate_size,
        layers=text.num_hidden_layers,
        head_rows=model.lm_head.weight.shape[0],
        tied=model.lm_head.weight is model.get_input_embeddings().weight,
        largest_module=max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules()),
        decoder_layer=count(model.model.language_model.layers[0]),
        fsdp_root=sum(p.numel() for p in outside.values()),
        fsdp_root_trained=sum(p.numel() for name, p in outside.items() if "vision_tower" not in name),
        fsdp_unit=max(units.values()),
    )


@dataclass(frozen=True)
class Stage:
    name: str
    trained: str
    """Size of the model that trains (projector + LLM; its vision tower is frozen)."""
    teacher: str | None = None
    """Size of the online Teacher, frozen on the GPU beside it."""
    cached: bool = False
    """Distilled from Teacher signals cached on disk (no Teacher on the GPU)."""

    @property
    def distills(self) -> bool:
        return self.teacher is not None or self.cached

    @property
    def kind(self) -> str:
        return "DFT" if self.distills else "SFT"


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


# --- model states: exact, given the byte rules -------------------------------------------------------------


def teacher_states(size: str, engine: str) -> float:
    """Bytes per GPU of an online Teacher's bf16 weights, placed as `distill/engines.py::prepare_teacher` does.

    Replicated under DDP and ZeRO-2; partitioned 1/N by a ZeRO-3 inference engine; under FSDP its layers are
    sharded 1/N (FSDP2) while the rest (embeddings, LM head, projector, vision embeddings) stays whole.
    """
    teacher = shape(size)
    if engine == "ZeRO-3":
        return 2 * teacher.total / GPUS
    if engine == "FSDP":
        return 2 * (teacher.total - teacher.fsdp_root) / GPUS + 2 * teacher.fsdp_root
    return 2.0 * teacher.total


def states(stage: Stage, engine: str) -> dict[str, float]:
    """Bytes per GPU of the trained model's states, its frozen tower and the online Teacher's weights.

    trained: DDP (HF Trainer, fp32-loaded weights, bf16 autocast): fp32 weights 4 + fp32 grads 4 + AdamW m, v 8.
             ZeRO-2 (DeepSpeed bf16): bf16 weights 2 replicated + (bf16 grads 2 + fp32 master 4 + m, v 8) / N.
             ZeRO-3: all 16 / N.  FSDP (fp32 sharded parameters, bf16 compute): (4 + 4 + 8) / N.
    frozen:  fp32 (4) under DDP and FSDP (sharded), bf16 (2) under DeepSpeed, which casts the whole module.
    teacher: bf16 (2), see `teacher_states`.
    """
    model = shape(stage.trained)
    trained = {
        "DDP": 16 * model.trained,
        "ZeRO-2": 2 * model.trained + 14 * model.trained / GPUS,
        "ZeRO-3": 16 * model.trained / GPUS,
        "FSDP": 16 * model.trained / GPUS,
    }[engine]
    frozen_bytes = 2 if engine.startswith("ZeRO") else 4
    frozen = frozen_bytes * model.vision / (GPUS if engine in SHARDED else 1)
    teacher = teacher_states(stage.teacher, engine) if stage.teacher is not None else 0.0
    return {"trained": trained, "frozen": frozen, "teacher": teacher}


# --- estimates: engine working copies, activations, logits -------------------------------------------------


def working(stage: Stage, engine: str, checkpointing: bool) -> dict[str, float]:
    """Bytes per GPU the engine holds beside the states during forward and backward (estimate).

    DDP: the gradient buckets (a second fp32 copy of the gradients: Accelerate leaves `gradient_as_bucket_view`
    False) + the bf16 copies autocast makes of the fp32 weights, which autograd keeps for backward.
    ZeRO-2: the bf16 gradients before they are reduced into the partition (DeepSpeed's estimator counts all).
    ZeRO-3: the gathered largest layer, bf16 weights and gradients (DeepSpeed's estimator: 4 x largest layer).
    FSDP: the root unit (embeddings, head, projector) gathered in bf16 through forward and backward, with its
    bf16 gradients; two layer units gathered (current + prefetched) and one unit's gradients.
    The online Teacher: its gathered largest layer under ZeRO-3, two gathered layer units under FSDP.
    """
    model = shape(stage.trained)
    engine_bytes = {
        "DDP": 4 * model.trained + 2 * model.autocast_cast(checkpointing),
        "ZeRO-2": 2 * model.trained,
        "ZeRO-3": 4 * model.largest_module,
        "FSDP": 2 * model.fsdp_root + 2 * model.fsdp_root_trained + 6 * model.fsdp_unit,
    }[engine]
    gathered = 0.0
    if stage.teacher is not None and engine in SHARDED:
        teacher = shape(stage.teacher)
        gathered = 2 * teacher.largest_module if engine == "ZeRO-3" else 4 * teacher.fsdp_unit
    return {"engine": engine_bytes, "teacher gathered": gathered}


def layer_activation_bytes(model: Shape) -> int:
    """Bytes per token one Qwen2 decoder layer keeps for backward (Korthikanti et al. 2022's count, 16-bit).

    Attention with a flash/memory-efficient kernel (no s x s scores), no dropout: RMSNorm input h, QKV input h,
    q, k, v after RoPE h + 2 h_kv, attention output h; SwiGLU MLP: RMSNorm input h, gate/up input h, gate output
    f (SiLU input), SiLU output f, up output f, product f (down-projection input). Elements x 2 bytes.
    """
    return 2 * (6 * model.hidden + 2 * model.kv_hidden + 4 * model.intermediate)


def fused_head_bytes(model: Shape, heads: int, calls: int, vocab: int = SHARED_VOCAB) -> float:
    """The fused head's working set: one fp32 chunk of logits over `vocab` per head (one call at a time) + the
    trained head's fp32 gradient accumulator of each call, held until backward."""
    return 4.0 * (heads * HEAD_CHUNK * vocab + calls * model.head_rows * model.hidden)


def activations(stage: Stage, seq: int = SEQ, batch: int = BATCH) -> dict[str, float]:
    """Bytes per GPU of activations and logits for `batch` samples of `seq` tokens (estimate, any engine)."""
    tokens = batch * seq
    model = shape(stage.trained)
    per_layer = layer_activation_bytes(model) * tokens
    out = {
        "layers": model.layers * per_layer,
        # full recomputation: each layer's bf16 input, plus one layer's activations during its recomputation
        "layers ckpt": model.layers * 2 * model.hidden * tokens + per_layer,
        # the projector keeps its input, its GELU input and its second linear's input per image token
        "projector": batch * IMAGE_TOKENS * 2 * (1152 + 2 * model.hidden),
        "teacher forward": 0.0,
        "logits naive": 4.0 * tokens * model.head_rows,
    }
    if stage.teacher is not None:
        teacher = shape(stage.teacher)
        # no grad: its final hidden states [B, L, d] kept for the loss + one layer's MLP working set (gate, up,
        # product) while it runs; it runs after the Student's forward, so it adds to the Student's activations
        out["teacher forward"] = 2.0 * tokens * (teacher.hidden + 3 * teacher.intermediate)
        out["logits naive"] += 4.0 * tokens * teacher.head_rows
        # response KD and visual-token KD (on in configs/paper): two fused calls, each with its gradient buffer
        out["logits as run"] = fused_head_bytes(model, heads=2, calls=2)
    elif stage.cached:
        out["logits as run"] = fused_head_bytes(model, heads=1, calls=1)
    else:  # SFT: the fused head computes the cross-entropy alone, over every row of the head
        out["logits as run"] = fused_head_bytes(model, heads=1, calls=1, vocab=model.head_rows)
    return out


def total(stage: Stage, engine: str, checkpointing: bool, seq: int = SEQ, batch: int = BATCH) -> float:
    """Everything added as if live at once: states + working copies + activations + logits as the code runs."""
    a = activations(stage, seq, batch)
    layers = a["layers ckpt"] if checkpointing else a["layers"]
    return (sum(states(stage, engine).values()) + sum(working(stage, engine, checkpointing).values())
            + layers + a["projector"] + a["teacher forward"] + a["logits as run"])


# --- rendering ----------------------------------------------------------------------------------------------


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
        rows.append([f"Qwen2.5-{size}", f"{m.vision:,}", f"{m.projector:,}", f"{m.llm:,}", f"{m.trained:,}",
                     f"{m.total:,}", f"{m.head_rows:,} ({'tied' if m.tied else 'untied'})"])
    return table(["LLM", "vision tower (frozen)", "projector", "LLM incl. head", "trained (projector + LLM)",
                  "total", "LM head rows"], rows)


def states_table() -> list[str]:
    rows = []
    for stage in STAGES:
        model = shape(stage.trained)
        teacher = f"{shape(stage.teacher).total / 1e9:.3f}B" if stage.teacher else "–"
        rows.append([stage.name, f"{model.trained / 1e9:.3f}B", f"{model.vision / 1e9:.3f}B", teacher]
                    + [mark(sum(states(stage, engine).values())) for engine in ENGINES])
    return table(["stage", "trained params", "frozen tower", "online Teacher", *ENGINES], rows)


def working_table() -> list[str]:
    rows = []
    for stage in STAGES:
        ddp = [gb(sum(working(stage, "DDP", ckpt).values())) for ckpt in (False, True)]
        rows.append([stage.name, " / ".join(ddp)]
                    + [gb(sum(working(stage, engine, False).values())) for engine in ENGINES[1:]])
    return table(["stage", "DDP (without / with checkpointing)", *ENGINES[1:]], rows)


def activation_table(seq: int, batch: int) -> list[str]:
    rows = []
    for stage in STAGES:
        a = activations(stage, seq, batch)
        rows.append([stage.name, gb(a["layers"]), gb(a["layers ckpt"]), gb(a["projector"]),
                     gb(a["teacher forward"]) if stage.teacher else "–", gb(a["logits naive"]),
                     gb(a["logits as run"])])
    return table(["stage", "LLM layers", "LLM layers, checkpointed", "projector", "Teacher forward",
                  "logits, naive (one fp32 B·L·V per model)", "logits, fused heads"], rows)


def total_table(seq: int, batch: int | None) -> list[str]:
    """Totals per engine, without / with checkpointing; `batch` None: the recipes' samples per GPU."""
    rows = []
    for stage in STAGES:
        b = RECIPE_BATCH[stage.kind] if batch is None else batch
        label = stage.name if batch is not None else f"{stage.name} ({b} per GPU)"
        rows.append([label] + [f"{mark(total(stage, e, False, seq, b))} / {mark(total(stage, e, True, seq, b))}"
                               for e in ENGINES])
    return table(["stage", *ENGINES], rows)


def arithmetic(stage: Stage, engine: str) -> list[str]:
    """The per-term arithmetic of one (stage, engine) cell at the default batch, as Markdown."""
    model = shape(stage.trained)
    tokens = BATCH * SEQ
    n, t, v = GPUS, model.trained / 1e9, model.vision / 1e9
    s, a = states(stage, engine), activations(stage)
    w, w_ckpt = working(stage, engine, False), working(stage, engine, True)
    trained = {
        "DDP": f"(4 + 4 + 8) × {t:.4f}e9",
        "ZeRO-2": f"2 × {t:.4f}e9 + (2 + 4 + 8) × {t:.4f}e9 / {n}",
        "ZeRO-3": f"(2 + 2 + 4 + 8) × {t:.4f}e9 / {n}",
        "FSDP": f"(4 + 4 + 8) × {t:.4f}e9 / {n}",
    }[engine]
    frozen = f"{2 if engine.startswith('ZeRO') else 4} × {v:.4f}e9" + (f" / {n}" if engine in SHARDED else "")
    lines = [f"**{stage.name}, {engine}**", "",
             f"- trained model states: {trained} B = {gb(s['trained'])} GB",
             f"- frozen vision tower: {frozen} B = {gb(s['frozen'])} GB"]
    if stage.teacher is not None:
        teacher = shape(stage.teacher)
        p = teacher.total / 1e9
        placement = {"ZeRO-3": f"2 × {p:.4f}e9 / {n}",
                     "FSDP": f"2 × ({p:.4f}e9 − {teacher.fsdp_root / 1e9:.4f}e9 root) / {n} + 2 × "
                             f"{teacher.fsdp_root / 1e9:.4f}e9 (root, whole)"}.get(engine, f"2 × {p:.4f}e9")
        lines.append(f"- online Teacher weights, bf16: {placement} B = {gb(s['teacher'])} GB")
    else:
        lines.append("- online Teacher: none, 0 GB")
    engine_terms = {
        "DDP": (f"4 × {t:.4f}e9 (buckets) + 2 × {model.autocast_cast(False) / 1e9:.4f}e9 (autocast bf16 copies; "
                f"checkpointed: 2 × {model.autocast_cast(True) / 1e9:.4f}e9)"),
        "ZeRO-2": f"2 × {t:.4f}e9 (bf16 gradients before reduction)",
        "ZeRO-3": f"4 × {model.largest_module / 1e9:.4f}e9 (largest layer, bf16 weights + gradients)",
        "FSDP": (f"2 × {model.fsdp_root / 1e9:.4f}e9 (root unit) + 2 × {model.fsdp_root_trained / 1e9:.4f}e9 "
                 f"(its gradients) + 6 × {model.fsdp_unit / 1e9:.4f}e9 (layer units)"),
    }[engine]
    value = gb(w["engine"]) + (f" / {gb(w_ckpt['engine'])}" if engine == "DDP" else "")
    lines.append(f"- engine working copies (estimate): {engine_terms} B = {value} GB")
    if w["teacher gathered"]:
        teacher = shape(stage.teacher)
        gathered = (f"2 × {teacher.largest_module / 1e9:.4f}e9 (largest layer)" if engine == "ZeRO-3"
                    else f"4 × {teacher.fsdp_unit / 1e9:.4f}e9 (two layer units)")
        lines.append(f"- Teacher weights gathered while it runs (estimate): {gathered} B = "
                     f"{gb(w['teacher gathered'])} GB")
    lines.append(f"- LLM layer activations (estimate): {model.layers} layers × {layer_activation_bytes(model):,} "
                 f"B/token × {tokens:,} tokens = {gb(a['layers'])} GB; checkpointed: {model.layers} × 2 × "
                 f"{model.hidden} × {tokens:,} B + one layer = {gb(a['layers ckpt'])} GB")
    if engine == "DDP":
        extra = model.layers * 2 * model.hidden * tokens
        lines.append(f"  (with fp32-loaded weights the residual stream is fp32 under autocast, so the checkpointed "
                     f"layer inputs take 4 B, not 2: +{gb(extra)} GB, not in the tables)")
    lines.append(f"- projector activations (estimate): {BATCH} × {IMAGE_TOKENS} × 2 × (1152 + 2 × {model.hidden}) B"
                 f" = {gb(a['projector'])} GB")
    if stage.teacher is not None:
        teacher = shape(stage.teacher)
        lines.append(f"- Teacher forward (estimate): 2 × {tokens:,} × ({teacher.hidden} + 3 × {teacher.intermediate})"
                     f" B = {gb(a['teacher forward'])} GB")
        lines.append(f"- logits, fused heads (response and visual-token KD): 4 × (2 × {HEAD_CHUNK} × "
                     f"{SHARED_VOCAB:,} + 2 × {model.head_rows:,} × {model.hidden}) B = {gb(a['logits as run'])} GB "
                     f"(naive: {gb(a['logits naive'])} GB)")
    elif stage.cached:
        lines.append(f"- logits, fused head: 4 × ({HEAD_CHUNK} × {SHARED_VOCAB:,} + {model.head_rows:,} × "
                     f"{model.hidden}) B = {gb(a['logits as run'])} GB (naive: {gb(a['logits naive'])} GB)")
    else:
        lines.append(f"- logits, fused cross-entropy head: 4 × ({HEAD_CHUNK} × {model.head_rows:,} + "
                     f"{model.head_rows:,} × {model.hidden}) B = {gb(a['logits as run'])} GB "
                     f"(naive: {gb(a['logits naive'])} GB)")
    lines.append(f"- total: {gb(total(stage, engine, False))} GB without checkpointing, "
                 f"{gb(total(stage, engine, True))} GB with it")
    return lines


WORKED = (
    ("Student 0.5B DFT ← Teacher 7B (online)", "DDP"),
    ("Student 0.5B DFT ← Teacher 7B (online)", "ZeRO-2"),
    ("Student 0.5B DFT ← Teacher 7B (online)", "ZeRO-3"),
    ("Student 0.5B DFT ← Teacher 7B (online)", "FSDP"),
    ("Teacher 7B SFT", "ZeRO-3"),
)


def render(seq: int = SEQ, batch: int = BATCH) -> str:
    """The generated part of docs/memory.md (at the defaults); other values give the tables 1 to 4 only."""
    documented = (seq, batch) == (SEQ, BATCH)
    parts = [
        f"Computed by `python scripts/memory_table.py` for {GPUS} GPUs of {GPU_GB:.0f} GB and {batch} samples of "
        f"{seq:,} tokens per GPU ({batch * seq:,} tokens, {IMAGE_TOKENS} of each sample's from its image). "
        f"GB = 10⁹ bytes. **Bold ✗**: over {GPU_GB:.0f} GB.",
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
