"""`llava-ckd plan`'s output: a block per stage, GPU-hours per plan, and the same as JSON."""

from __future__ import annotations

from dataclasses import asdict

from llava_ckd.plan.cost import CascadePlan, StageCost
from llava_ckd.plan.memory import GB

STATES = ("trained", "frozen", "teacher")
WORKING = ("engine", "teacher gathered")
ACTIVATIONS = ("layers", "projector", "teacher forward")


def gb(value: float) -> str:
    return f"{value / GB:.2f}"


def hours(value: float | None) -> str:
    return "unknown" if value is None else f"{value:,.1f}"


def wall(value: float, gpus: int) -> str:
    hours_ = value / gpus
    return f"{hours_ * 60:.0f} min" if hours_ < 1 else f"{hours_:.1f} h"


def bottom_up_ratio(plan: CascadePlan) -> float | None:
    direct, bottom_up = plan.plans.get("direct"), plan.plans.get("bottom-up")
    return bottom_up / direct if direct and bottom_up is not None else None


def stage_lines(cost: StageCost, plan: CascadePlan) -> list[str]:
    hardware = plan.hardware
    lines = [f"[{cost.number}] {cost.name}  (plans: {', '.join(cost.plans)})", f"    {cost.summary}"]
    if cost.parameters:
        lines.append("    parameters: " + " · ".join(f"{name} {count:,}" for name, count in cost.parameters.items()))
    if cost.memory:
        step, m = cost.step, cost.memory
        ckpt = "activation checkpointing" if step.checkpointing else "no activation checkpointing"
        lines.append(f"    memory per GPU ({hardware.engine}, {step.batch} × {step.seq:,} tokens, {step.precision}, "
                     f"{ckpt}), GB:")
        lines.append("      model states " + " + ".join(f"{name} {gb(m[name].bytes)}" for name in STATES)
                     + " | working copies " + " + ".join(f"{name} {gb(m[name].bytes)}" for name in WORKING))
        lines.append("      activations " + " + ".join(f"{name} {gb(m[name].bytes)}" for name in ACTIVATIONS)
                     + f" | KD heads {gb(m['heads'].bytes)}")
        verdict = "fits" if cost.fits else f"does not fit; {cost.change}"
        other = "without" if step.checkpointing else "with"
        lines.append(f"      total {gb(cost.need)} of {hardware.memory_gb:g}: {verdict} "
                     f"({other} checkpointing: {gb(cost.memory_flipped)})")
    if cost.tokens is not None:
        t = cost.tokens
        lines.append(f"    data: {t.samples:,.0f} samples, {t.tokens / 1e6:,.1f}M tokens per epoch "
                     f"({t.response / 1e6:,.1f}M labelled), {t.source}; this stage: {cost.samples:,.0f} samples")
    if cost.teacher_tokens is not None:
        t = cost.teacher_tokens
        lines.append(f"    online Teacher's forward, its own encoding: {t.tokens / 1e6:,.1f}M tokens per epoch "
                     f"({t.response / 1e6:,.1f}M labelled), {t.source}")
    if cost.flops is not None:
        lines.append(f"    compute: {cost.flops:.3g} FLOP = {cost.gpu_hours:,.1f} GPU-hours "
                     f"({wall(cost.gpu_hours, hardware.gpus)} on {hardware.gpus} GPUs)")
    lines += [f"    {note}" for note in cost.notes]
    return lines


def render(plan: CascadePlan) -> str:
    cascade, hardware = plan.cascade, plan.hardware
    lines = [f"plan {cascade.source}: {hardware.gpus} GPUs × {hardware.memory_gb:g} GB, engine {hardware.engine}, "
             f"{hardware.tflops:g} TFLOPS per GPU at MFU {hardware.mfu:g}", ""]
    if cascade.missing:
        lines += [f"missing inputs ({len(cascade.missing)}):"] + [f"  {line}" for line in cascade.missing] + [""]
    for cost in plan.stages:
        lines += stage_lines(cost, plan) + [""]
    numbers = {cost.name: cost.number for cost in plan.stages}
    lines.append(f"GPU-hours ({hardware.gpus} GPUs, MFU {hardware.mfu:g}); a plan counts every stage it needs:")
    width = max(len(name) for name in [*plan.plans, "recipe"])
    for name, value in plan.plans.items():
        stages = " ".join(str(numbers[cascade.name(node)]) for node in cascade.plans[name])
        when = f" ({wall(value, hardware.gpus)} on {hardware.gpus} GPUs)" if value is not None else ""
        lines.append(f"  {name.ljust(width)}  {hours(plan.plans[name]):>10}{when}   stages {stages}")
    when = f" ({wall(plan.recipe_hours, hardware.gpus)} on {hardware.gpus} GPUs)" if plan.recipe_hours else ""
    lines.append(f"  {'recipe'.ljust(width)}  {hours(plan.recipe_hours):>10}{when}   every stage once")
    if (ratio := bottom_up_ratio(plan)) is not None:
        lines.append(f"  bottom-up / direct: {ratio:.2f}×")
    unfit = [str(cost.number) for cost in plan.stages if cost.fits is False]
    lines += ["", f"does not fit in {hardware.memory_gb:g} GB: stage(s) {', '.join(unfit)}" if unfit else
              f"every stage whose memory is known fits in {hardware.memory_gb:g} GB per GPU"]
    return "\n".join(lines)


def to_json(plan: CascadePlan) -> dict:
    def stage(cost: StageCost) -> dict:
        return {"number": cost.number, "name": cost.name, "plans": cost.plans, "summary": cost.summary,
                "parameters": cost.parameters,
                "memory": {name: {"bytes": term.bytes, "formula": term.formula} for name, term in cost.memory.items()},
                "memory_bytes": cost.need, "memory_bytes_checkpointing_flipped": cost.memory_flipped,
                "fits": cost.fits, "change": cost.change,
                "tokens_per_epoch": asdict(cost.tokens) if cost.tokens else None,
                "teacher_tokens_per_epoch": asdict(cost.teacher_tokens) if cost.teacher_tokens else None,
                "samples": cost.samples,
                "flops": cost.flops, "gpu_hours": cost.gpu_hours, "notes": cost.notes}

    return {"recipe": str(plan.cascade.source), "hardware": asdict(plan.hardware),
            "missing_inputs": list(plan.cascade.missing), "stages": [stage(cost) for cost in plan.stages],
            "plans_gpu_hours": plan.plans, "recipe_gpu_hours": plan.recipe_hours,
            "bottom_up_over_direct": bottom_up_ratio(plan)}
