"""What a cascade will cost before it runs: per stage (each shared stage once) its parameters, memory per GPU under
an engine, tokens, FLOPs and GPU-hours; per plan and for the whole recipe, the GPU-hours.

The stages are the recipe's own, expanded as `llava-ckd cascade` runs them (`cascade/expand.py`), missing inputs
included; memory follows `plan/memory.py`, FLOPs `plan/flops.py`, tokens `plan/tokens.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from llava_ckd.cascade.expand import Cascade, Node, SignalsJob, origin
from llava_ckd.config import ConfigError, OnlineTeacherConfig, StageConfig
from llava_ckd.distill.terms import term_named
from llava_ckd.models.load import tokenizer_from_source
from llava_ckd.models.shapes import TYPICAL_IMAGE, ConfigAbsent, ImageSize, ModelShape, ShapeError, shape_of
from llava_ckd.plan.flops import inference_flops, training_flops
from llava_ckd.plan.memory import ENGINES, GB, Step, Term, memory, smallest_change, total
from llava_ckd.plan.tokens import Tokens, assumed, count_tokens


@dataclass(frozen=True)
class Hardware:
    gpus: int = 8
    memory_gb: float = 80.0
    engine: str = "ddp"
    tflops: float = 989.0
    """Peak dense bf16 TFLOPS of one GPU (H100 SXM: 989)."""
    mfu: float = 0.4

    def check(self) -> Hardware:
        if self.engine not in ENGINES:
            raise ConfigError(f"--engine: unknown engine {self.engine!r}; known: {', '.join(ENGINES)}")
        for name, value in (("--gpus", self.gpus), ("--gpu-memory", self.memory_gb), ("--gpu-tflops", self.tflops)):
            if value <= 0:
                raise ConfigError(f"{name}: must be positive, got {value}")
        if not 0 < self.mfu <= 1:
            raise ConfigError(f"--mfu: must lie in (0, 1], got {self.mfu}")
        return self

    def gpu_hours(self, flops: float) -> float:
        return flops / (self.tflops * 1e12 * self.mfu) / 3600


@dataclass(frozen=True)
class DataSize:
    """What to assume for a data file that is absent: samples, text tokens, labelled tokens and images per sample."""

    samples: int
    text_tokens: int
    response_tokens: int | None = None
    images: int = 1

    @classmethod
    def parse(cls, text: str, images: int = 1) -> DataSize:
        """`SAMPLES,TEXT_TOKENS[,RESPONSE_TOKENS]`."""
        try:
            numbers = [int(part) for part in text.split(",")]
            if not 2 <= len(numbers) <= 3 or min(numbers) < 1:
                raise ValueError
        except ValueError:
            raise ConfigError(f"--data: {text!r} is not SAMPLES,TEXT_TOKENS[,RESPONSE_TOKENS] (positive whole "
                              "numbers)") from None
        return cls(*numbers, images=images)

    def tokens(self, image_tokens: int) -> Tokens:
        response = self.text_tokens if self.response_tokens is None else self.response_tokens
        return assumed(self.samples, self.text_tokens, response, self.images, image_tokens)


@dataclass(frozen=True)
class Assumptions:
    """Data sizes to use where a stage's data file is absent: per file, else `default` (None: tokens unknown); the
    image size a dynamic-resolution model is assumed to see."""

    files: dict[Path, DataSize] = field(default_factory=dict)
    default: DataSize | None = None
    sample: int | None = None
    """Count this many random records of each data file and scale up (None: count them all)."""
    image_size: ImageSize = TYPICAL_IMAGE

    def tokens(self, conversations: Path, image_tokens: int) -> Tokens | None:
        size = self.files.get(Path(conversations), self.default)
        return None if size is None else size.tokens(image_tokens)


@dataclass
class StageCost:
    number: int
    name: str
    plans: list[str]
    summary: str
    """What runs: the model, what trains, the Teacher."""
    parameters: dict[str, int] = field(default_factory=dict)
    memory: dict[str, Term] = field(default_factory=dict)
    memory_flipped: float | None = None
    """The total with activation checkpointing the other way."""
    step: Step | None = None
    fits: bool | None = None
    change: str | None = None
    tokens: Tokens | None = None
    teacher_tokens: Tokens | None = None
    """The online Teacher's tokens per epoch, where its encoding differs from the Student's (other image tokens)."""
    samples: float | None = None
    flops: float | None = None
    gpu_hours: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def need(self) -> float | None:
        return sum(term.bytes for term in self.memory.values()) if self.memory else None


@dataclass
class CascadePlan:
    cascade: Cascade
    hardware: Hardware
    stages: list[StageCost]
    plans: dict[str, float | None]
    """GPU-hours per plan (its stages, shared ones included); None if a stage's cost is unknown."""
    recipe_hours: float | None
    """Every stage once."""


class Planner:
    def __init__(self, cascade: Cascade, hardware: Hardware, assumptions: Assumptions):
        self.cascade, self.hardware, self.assumptions = cascade, hardware, assumptions
        self.shapes: dict[str, ModelShape | str] = {}
        self.epoch_tokens: dict[tuple, Tokens | str] = {}

    def shape(self, model: str) -> ModelShape | str:
        """The shape of a model label, or why it is unknown; a config that exists but cannot be read is an error."""
        if model not in self.shapes:
            start = origin(self.cascade.recipe, model)
            try:
                self.shapes[model] = shape_of(start.source, image_size=self.assumptions.image_size)
            except ConfigAbsent as absent:
                self.shapes[model] = str(absent)
            except (ShapeError, OSError) as error:
                raise ConfigError(f"{self.cascade.source}: {start.where}: {error}") from None
        return self.shapes[model]

    def tokens(self, model: str, shape: ModelShape, conversations: Path, max_length: int) -> Tokens | str:
        key = (model, conversations, max_length)
        if key not in self.epoch_tokens:
            self.epoch_tokens[key] = self._tokens(model, shape, conversations, max_length)
        return self.epoch_tokens[key]

    def _tokens(self, model: str, shape: ModelShape, conversations: Path, max_length: int) -> Tokens | str:
        fallback = self.assumptions.tokens(conversations, shape.image_tokens)
        hint = f"give --data {conversations}=SAMPLES,TEXT_TOKENS[,RESPONSE_TOKENS]"
        if not conversations.is_file():
            return fallback or f"{conversations} not there: {hint}"
        try:
            tokenizer = tokenizer_from_source(origin(self.cascade.recipe, model).source)
        except (OSError, ValueError) as error:
            reason = f"tokenizer of {model} not available here ({str(error).splitlines()[0]})"
            return fallback or f"{reason}: {hint}"
        return count_tokens(conversations, tokenizer, shape.image_tokens, max_length, self.assumptions.sample)

    def stage(self, number: int, node: Node) -> StageCost:
        cascade = self.cascade
        cost = StageCost(number, cascade.name(node), cascade.plans_of(node), "")
        job = node.job
        shape = self.shape(node.model)
        if isinstance(job, SignalsJob):
            cost.summary = f"{node.model} writes top-{job.top_k} signals of {job.conversations.name}"
            conversations, max_length = job.conversations, job.max_length
        else:
            teacher = f", online Teacher {node.teacher}" if isinstance(job.teacher, OnlineTeacherConfig) else ""
            cached = ", cached signals" if job.kind == "distill" and not teacher else ""
            cost.summary = f"{job.kind}: {node.model} trains {' + '.join(job.trained_parts)}{teacher}{cached}"
            conversations, max_length = job.data.conversations, job.data.max_length
        if isinstance(shape, str):
            cost.notes.append(f"parameters, memory and FLOPs unknown: {shape}")
            return cost
        note_image_size(cost, node.model, shape)
        tokens = self.tokens(node.model, shape, conversations, max_length)
        if isinstance(tokens, str):
            cost.notes.append(f"tokens unknown: {tokens}")
            tokens = None
        if isinstance(job, SignalsJob):
            cost.parameters = {"Teacher (inference)": shape.total}
            if tokens is not None:
                cost.tokens, cost.samples = tokens, tokens.samples
                cost.flops = inference_flops(shape, tokens, tokens.response)
        else:
            self.training(cost, node, job, shape, tokens)
        if cost.flops is not None:
            cost.gpu_hours = self.hardware.gpu_hours(cost.flops)
        return cost

    def training(self, cost: StageCost, node: Node, job: StageConfig, shape: ModelShape, tokens: Tokens | None):
        hardware = self.hardware
        online = isinstance(job.teacher, OnlineTeacherConfig)
        teacher = self.shape(f"teacher-{node.teacher}") if online else None
        if isinstance(teacher, str):
            cost.notes.append(f"online Teacher unknown: {teacher}")
            return
        if teacher is not None:
            note_image_size(cost, f"online Teacher {node.teacher}", teacher)
        trained = job.trained_parts
        cost.parameters = {"trained": shape.count(trained), "frozen": shape.total - shape.count(trained)}
        if teacher is not None:
            cost.parameters["online Teacher"] = teacher.total
        teacher_tokens = None
        if teacher is not None:
            teacher_tokens = self.tokens(f"teacher-{node.teacher}", teacher, job.data.conversations,
                                         job.data.max_length)
            if isinstance(teacher_tokens, str):
                cost.notes.append(f"online Teacher's tokens unknown: {teacher_tokens}")
                teacher_tokens = None
            elif tokens is not None and teacher_tokens != tokens:
                cost.teacher_tokens = teacher_tokens
        visual = online and term_named(job.losses, "visual_kd") is not None
        step = Step(trained=trained, batch=job.batch_size, seq=padded_length(tokens, job.data.max_length),
                    precision=job.precision, checkpointing=job.activation_checkpointing, teacher=teacher,
                    teacher_seq=padded_length(teacher_tokens, job.data.max_length) if teacher else None,
                    cached=job.kind == "distill" and not online, visual_kd=visual, chunk=job.kd_chunk_size,
                    vocab=min(shape.head_rows, teacher.head_rows) if teacher else None)
        cost.step = step
        cost.memory = memory(shape, step, hardware.engine, hardware.gpus)
        flipped = replace(step, checkpointing=not step.checkpointing)
        cost.memory_flipped = total(shape, flipped, hardware.engine, hardware.gpus)
        budget = hardware.memory_gb * GB
        cost.fits = cost.need <= budget
        if not cost.fits:
            change = smallest_change(shape, step, hardware.engine, hardware.gpus, job.grad_accum, budget)
            if change is not None:
                cost.change = f"fits with {change.describe(step, hardware.engine, job.grad_accum)}: " \
                              f"{change.bytes / GB:.1f} GB"
            else:
                cost.change = "no engine, checkpointing or batch fits it on " + gpus_needed(shape, step, budget,
                                                                                            hardware.gpus)
        if tokens is None or (teacher is not None and teacher_tokens is None):
            return
        global_batch = job.batch_size * job.grad_accum * hardware.gpus
        samples = job.max_steps * global_batch if job.max_steps else job.epochs * tokens.samples
        seen = tokens.scaled(samples)
        cost.tokens, cost.samples = tokens, samples
        positions = seen.response + (seen.images * shape.image_tokens if visual else 0.0)
        cost.flops = training_flops(shape, seen, trained, job.activation_checkpointing, positions)
        if teacher is not None:  # its own tokens; visual KD needs the Student's image tokens, so also its positions
            teacher_seen = teacher_tokens.scaled(samples)
            cost.flops += inference_flops(teacher, teacher_seen, teacher_seen.response + (positions - seen.response))


def note_image_size(cost: StageCost, model: str, shape: ModelShape) -> None:
    if shape.image_assumption is not None:
        cost.notes.append(f"image tokens of {model}: {shape.image_assumption}, at an assumed image size (--image-size)")


def padded_length(tokens: Tokens | None, max_length: int) -> int:
    """Tokens per sample a batch pads to at worst: the longest counted sample within max_length; max_length where the
    tokens are assumed or unknown."""
    counted = tokens is not None and not tokens.source.startswith("assumed")
    return min(max_length, tokens.longest) if counted else max_length


def gpus_needed(model: ModelShape, step: Step, budget: float, gpus: int) -> str:
    """How many GPUs of this memory a stage needs at the least (ZeRO-3, checkpointing, batch 1)."""
    leanest = replace(step, checkpointing=True, batch=1)
    for more in range(gpus + 1, 4097):
        if total(model, leanest, "zero3", more) <= budget:
            return f"{gpus} GPUs; it needs {more} of them (zero3, checkpointing, batch 1)"
    return f"{gpus} GPUs, nor on 4,096: it needs GPUs with more memory"


def plan_costs(cascade: Cascade, hardware: Hardware, assumptions: Assumptions = Assumptions()) -> CascadePlan:
    """The cost of every stage of `cascade` (each once), of each plan, and of the recipe."""
    read = {Path(node.job.conversations if isinstance(node.job, SignalsJob) else node.job.data.conversations)
            for node in cascade.stages}
    if unknown := sorted(str(path) for path in set(assumptions.files) - read):
        raise ConfigError(f"--data: {', '.join(unknown)}: no stage of {cascade.source} reads it; the data files are "
                          f"{', '.join(sorted(map(str, read)))}")
    planner = Planner(cascade, hardware.check(), assumptions)
    stages = [planner.stage(number, node) for number, node in enumerate(cascade.stages, 1)]
    by_name = {cost.name: cost for cost in stages}

    def hours(costs) -> float | None:
        values = [cost.gpu_hours for cost in costs]
        return None if None in values else sum(values)

    plans = {plan: hours(by_name[cascade.name(node)] for node in nodes) for plan, nodes in cascade.plans.items()}
    return CascadePlan(cascade, hardware, stages, plans, hours(stages))
