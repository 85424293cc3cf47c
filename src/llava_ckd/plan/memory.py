"""Memory per GPU of one training step of a stage: the byte rules of each engine and the activation estimates.

The derivation and its sources are in docs/memory.md; every term here carries its arithmetic as text, which the
docs and `llava-ckd plan --verbose` print. Model states are exact given the rules; the engines' working copies,
the activations and the KD heads' buffers are estimates. GB = 10⁹ bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from llava_ckd.models.shapes import ModelShape

GB = 1e9
ENGINES = ("ddp", "zero2", "zero3", "fsdp")
SHARDED = ("zero3", "fsdp")
"""Engines that shard the parameters (so also the frozen parts and the online Teacher) over the GPUs."""
HALF = ("bf16", "fp16")


@dataclass(frozen=True)
class Term:
    bytes: float
    formula: str
    """The arithmetic that gives `bytes`."""


@dataclass(frozen=True)
class Step:
    """What one GPU holds in one micro-step of a stage."""

    trained: tuple[str, ...]
    """Parts that train (vision, projector, llm); the rest is frozen."""
    batch: int
    """Samples per GPU."""
    seq: int
    """Tokens per sample, padded (batches pad to their longest sample: the worst case is max_length)."""
    precision: str = "bf16"
    checkpointing: bool = False
    teacher: ModelShape | None = None
    """The online Teacher, frozen on the GPUs beside the Student."""
    teacher_seq: int | None = None
    """Tokens per sample as the online Teacher encodes it (its own template and image tokens); None: `seq`."""
    cached: bool = False
    """Distilled from cached Teacher signals (no Teacher on the GPUs)."""
    visual_kd: bool = False
    """Visual-token KD (online): a second fused head call, at the image-token positions."""
    chunk: int = 256
    """Rows of the fused LM head per chunk (the stage's kd_chunk_size)."""
    vocab: int | None = None
    """Rows the KD heads compare (the shared tokenizer vocabulary); None: every row of the head."""
    images: int = 1
    """Images per sample."""

    @property
    def tokens(self) -> int:
        return self.batch * self.seq

    @property
    def teacher_tokens(self) -> int:
        return self.batch * (self.seq if self.teacher_seq is None else self.teacher_seq)

    @property
    def half(self) -> bool:
        return self.precision in HALF

    @property
    def distills(self) -> bool:
        return self.teacher is not None or self.cached


def billions(count: float) -> str:
    return f"{count / 1e9:.4f}e9"


def weight_bytes(step: Step, engine: str) -> int:
    """Bytes per stored weight: `llava-ckd` loads fp32 and autocasts (DDP, FSDP keeps fp32 shards); DeepSpeed casts
    the whole module to the half precision."""
    return 2 if engine.startswith("zero") and step.half else 4


def model_states(model: ModelShape, step: Step, engine: str, gpus: int) -> dict[str, Term]:
    """Bytes per GPU of the trained parts' states, the frozen parts and the online Teacher's weights (exact)."""
    psi, n = model.count(step.trained), gpus
    w = weight_bytes(step, engine)
    trained = {
        "ddp": Term(16 * psi, f"(4 + 4 + 8) × {billions(psi)}"),
        "zero2": Term(w * psi + (16 - w) * psi / n, f"{w} × {billions(psi)} + {16 - w} × {billions(psi)} / {n}"),
        "zero3": Term(16 * psi / n, f"16 × {billions(psi)} / {n}"),
        "fsdp": Term(16 * psi / n, f"(4 + 4 + 8) × {billions(psi)} / {n}"),
    }[engine]
    frozen_count = model.total - psi
    shard = n if engine in SHARDED else 1
    frozen = Term(w * frozen_count / shard, f"{w} × {billions(frozen_count)}" + (f" / {n}" if shard > 1 else ""))
    return {"trained": trained, "frozen": frozen, "teacher": teacher_weights(step, engine, gpus)}


def teacher_weights(step: Step, engine: str, gpus: int) -> Term:
    """The online Teacher's weights, in the stage's half precision (fp32 in an fp32 stage), placed as
    `engines.py::prepare_teacher` does: replicated under DDP and ZeRO-2, partitioned by a ZeRO-3
    inference engine, layers sharded by FSDP2 while the rest (embeddings, head, projector, vision embeddings)
    stays whole."""
    teacher = step.teacher
    if teacher is None:
        return Term(0.0, "no online Teacher")
    t, n = 2 if step.half else 4, gpus
    if engine == "zero3":
        return Term(t * teacher.total / n, f"{t} × {billions(teacher.total)} / {n}")
    if engine == "fsdp":
        layers = teacher.total - teacher.fsdp_root
        return Term(t * layers / n + t * teacher.fsdp_root,
                    f"{t} × {billions(layers)} (layers) / {n} + {t} × {billions(teacher.fsdp_root)} (root, whole)")
    return Term(t * teacher.total, f"{t} × {billions(teacher.total)}")


def autocast_copies(model: ModelShape, step: Step) -> int:
    """Parameters whose half-precision autocast copies autograd keeps for backward: every weight on the gradient's
    path (projector and LLM), but an untied input embedding (a lookup); with checkpointing, the decoder layers'
    copies only for the layer being recomputed."""
    cast = model.parts["projector"] + model.parts["llm"] - (0 if model.tied else model.input_embedding)
    return cast - (model.layers - 1) * model.decoder_layer if step.checkpointing else cast


def working_copies(model: ModelShape, step: Step, engine: str, gpus: int) -> dict[str, Term]:
    """Bytes per GPU the engine holds beside the states during forward and backward (estimate).

    DDP: the gradient buckets (a second fp32 copy of the gradients; none in one process) + the autocast copies.
    ZeRO-2: the gradients before they are reduced into the partition. ZeRO-3: the gathered largest layer, weights
    and gradients. FSDP: the root unit gathered through forward and backward with its gradients; two layer units
    gathered (current + prefetched) and one unit's gradients. The online Teacher: its gathered largest layer under
    ZeRO-3, two gathered layer units under FSDP.
    """
    psi = model.count(step.trained)
    c = 2 if step.half else 4  # compute dtype
    if engine == "ddp":
        buckets = 4 * psi if gpus > 1 else 0
        cast = autocast_copies(model, step) if step.half else 0
        own = Term(buckets + 2 * cast, f"{4 if gpus > 1 else 0} × {billions(psi)} (buckets) + "
                                       f"{2 if step.half else 0} × {billions(cast)} (autocast copies)")
    elif engine == "zero2":
        own = Term(c * psi, f"{c} × {billions(psi)} (gradients before reduction)")
    elif engine == "zero3":
        own = Term(2 * c * model.largest_module, f"2 × {c} × {billions(model.largest_module)} (largest layer, "
                                                 "weights + gradients)")
    else:
        root_trained = sum(model.fsdp_root_trained[part] for part in step.trained)
        own = Term(c * (model.fsdp_root + root_trained + 3 * model.fsdp_unit),
                   f"{c} × ({billions(model.fsdp_root)} (root unit) + {billions(root_trained)} (its gradients) + "
                   f"3 × {billions(model.fsdp_unit)} (layer units))")
    gathered = Term(0.0, "none")
    teacher, t = step.teacher, 2 if step.half else 4
    if teacher is not None and engine == "zero3":
        gathered = Term(t * teacher.largest_module, f"{t} × {billions(teacher.largest_module)} (largest layer)")
    elif teacher is not None and engine == "fsdp":
        gathered = Term(2 * t * teacher.fsdp_unit, f"2 × {t} × {billions(teacher.fsdp_unit)} (two layer units)")
    return {"engine": own, "teacher gathered": gathered}


def layer_activation_bytes(model: ModelShape, element: int) -> int:
    """Bytes per token one decoder layer keeps for backward (Korthikanti et al. 2022's count for the Qwen2 block):
    attention with a flash/memory-efficient kernel (no s × s scores): RMSNorm input h, QKV input h, q, k, v h + 2
    h_kv, attention output h; SwiGLU MLP: RMSNorm input h, gate/up input h, gate output, SiLU output, up output,
    product (4 f). Elements × `element` bytes."""
    return element * (6 * model.hidden + 2 * model.kv_hidden + 4 * model.intermediate)


def head_buffers(model: ModelShape, step: Step) -> Term:
    """The fused heads' working set: one fp32 chunk of logits over the compared rows per model (one call at a time)
    + the trained head's fp32 gradient accumulator of each call, held until backward."""
    if step.teacher is not None:
        heads, calls = 2, 2 if step.visual_kd else 1
    else:
        heads, calls = 1, 1
    vocab = step.vocab if step.distills and step.vocab else model.head_rows
    accumulators = calls if "llm" in step.trained else 0
    return Term(4.0 * (heads * step.chunk * vocab + accumulators * model.head_rows * model.hidden),
                f"4 × ({heads} × {step.chunk} × {vocab:,} + {accumulators} × {model.head_rows:,} × {model.hidden})")


def activations(model: ModelShape, step: Step) -> dict[str, Term]:
    """Bytes per GPU of activations and the KD heads' buffers for one micro-batch (estimate, any engine)."""
    a, tokens = (2 if step.half else 4), step.tokens
    per_layer = layer_activation_bytes(model, a)
    if step.checkpointing:  # full recomputation: each layer's input, plus one layer's activations while recomputed
        layers = Term(model.layers * a * model.hidden * tokens + per_layer * tokens,
                      f"{model.layers} × {a} × {model.hidden} × {tokens:,} + {per_layer:,} × {tokens:,} (one layer)")
    else:
        layers = Term(model.layers * per_layer * tokens, f"{model.layers} × {per_layer:,} × {tokens:,}")
    image_tokens = step.batch * step.images * model.image_tokens
    projector = Term(0.0, "projector frozen")
    if "projector" in step.trained:  # its input, its GELU input and its second linear's input per image token
        projector = Term(image_tokens * a * (model.projector_input + 2 * model.projector_hidden),
                         f"{image_tokens:,} × {a} × ({model.projector_input} + 2 × {model.projector_hidden})")
    teacher = Term(0.0, "no online Teacher")
    if step.teacher is not None:  # no grad: its final hidden states + one layer's MLP working set while it runs
        t = step.teacher
        teacher = Term(a * step.teacher_tokens * (t.hidden + 3 * t.intermediate),
                       f"{a} × {step.teacher_tokens:,} × ({t.hidden} + 3 × {t.intermediate})")
    return {"layers": layers, "projector": projector, "teacher forward": teacher, "heads": head_buffers(model, step)}


def memory(model: ModelShape, step: Step, engine: str, gpus: int) -> dict[str, Term]:
    """Every term, by name: states, working copies, activations, KD heads."""
    return (model_states(model, step, engine, gpus) | working_copies(model, step, engine, gpus)
            | activations(model, step))


def total(model: ModelShape, step: Step, engine: str, gpus: int) -> float:
    """Everything added as if live at once (it overstates: gradients grow while activations are freed)."""
    return sum(term.bytes for term in memory(model, step, engine, gpus).values())


@dataclass(frozen=True)
class Change:
    """A way to run a stage in less memory, and its total per GPU."""

    engine: str
    checkpointing: bool
    batch: int
    grad_accum: int
    bytes: float

    def describe(self, step: Step, engine: str, grad_accum: int) -> str:
        changes = []
        if self.engine != engine:
            changes.append(f"engine {self.engine}")
        if self.checkpointing and not step.checkpointing:
            changes.append("activation_checkpointing: true")
        if self.batch != step.batch:
            changes.append(f"batch_size {self.batch} with grad_accum {self.grad_accum} (was {step.batch} × "
                           f"{grad_accum}: same global batch)")
        return ", ".join(changes)


def smallest_change(model: ModelShape, step: Step, engine: str, gpus: int, grad_accum: int,
                    budget: float) -> Change | None:
    """The first of these that fits `budget` bytes: one lever (checkpointing, a sharding engine, a smaller per-device
    batch with more accumulation), then two, then all three; within a kind, the least memory-hungry engine last.
    None when nothing fits."""
    engines = [e for e in ENGINES if ENGINES.index(e) > ENGINES.index(engine)]
    batches = []
    batch = step.batch
    while batch > 1:
        batch //= 2
        batches.append(batch)
    options = []
    for levers in range(1, 4):
        for new_engine in [engine, *engines]:
            for checkpointing in {step.checkpointing, True}:
                for new_batch in [step.batch, *batches]:
                    changed = (new_engine != engine) + (checkpointing != step.checkpointing) + (new_batch != step.batch)
                    if changed != levers:
                        continue
                    trial = replace(step, checkpointing=checkpointing, batch=new_batch)
                    need = total(model, trial, new_engine, gpus)
                    if need <= budget:
                        accum = grad_accum * step.batch // new_batch
                        options.append(Change(new_engine, checkpointing, new_batch, accum, need))
        if options:
            return min(options, key=lambda c: (c.engine != engine, -c.batch, ENGINES.index(c.engine)))
    return None
