"""A finished study's figures: Teachers, the Student before KD, every plan row with paired differences, the
capacity-gap curve; written as summary.json, summary.md, gap.png and plans.png.

Beside the headline accuracy, each row carries the benchmark's other figures per seed where it has them (on
answers with real uncertainty: modal accuracy, log-likelihood of the answer distribution, calibration error),
each with its paired differences, and the vision-use check: the same Students' accuracy with every image blank
and with the images shuffled across questions (also for each Teacher and for the Student before KD)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

from llava_ckd.cascade.capacity import llm_parameters
from llava_ckd.cascade.expand import Cascade, Node
from llava_ckd.cascade.plans import STUDENT
from llava_ckd.cascade.recipe import Recipe
from llava_ckd.config import StageConfig
from llava_ckd.data.synthetic import majority_baseline
from llava_ckd.eval.run import IMAGE_USES, VISION_MARGIN, evaluate
from llava_ckd.study.plots import plot_gap_curve, plot_plans
from llava_ckd.study.stats import describe, paired
from llava_ckd.study.variants import CHAIN, CONTINUED, PER_TEACHER, SUB_CHAIN, Job, Variant
from llava_ckd.train.stage import numbered_checkpoints

PLATEAU_FRACTION = 0.75
EXTRA_METRICS = ("modal_accuracy", "log_likelihood", "ece")
CEILING_METRICS = ("bayes_accuracy", "bayes_log_likelihood")
ABLATIONS = IMAGE_USES[1:]


@dataclass(frozen=True)
class Row:
    label: str
    variant: str
    plan: str
    teacher: str | None              # the largest Teacher the Student distils from
    teacher_set: int
    student_steps: int               # the Student's optimizer steps after its SFT
    accuracy: dict[int, float]       # seed -> test accuracy
    categories: dict[int, dict[str, float]]
    metrics: dict[int, dict[str, float]]      # seed -> the result's other figures (EXTRA_METRICS it has)
    ablated: dict[int, dict[str, float]]      # seed -> accuracy with the images blank, shuffled


def from_distilling_template(cascade: Cascade, node: Node) -> bool:
    """Whether a stage comes from a distilling template stage (with a Teacher, or as `none`'s stand-in)."""
    distilling = {stage.name for stage in cascade.recipe.stages if stage.kind == "distill"}
    return node.step.split("-from-")[0] in distilling


def training_stages(cascade: Cascade, model: str) -> list[Node]:
    """A model's own training: for the Student, its stages before any distilling stage of the template (pretrain,
    SFT), those every plan shares; for a Teacher, every stage it trains without a Teacher (a distilling template
    stage with `without_kd: sft` is its fine-tuning)."""
    return [node for node in cascade.stages if node.model == model and isinstance(node.job, StageConfig)
            and not (from_distilling_template(cascade, node) if model == STUDENT else node.distilled)]


def trains_itself(cascade: Cascade, model: str) -> bool:
    """False for a ready checkpoint."""
    return bool(training_stages(cascade, model))


def own_training(cascade: Cascade, model: str) -> Node:
    """The last stage a model trains before distillation (a Teacher's or the Student's SFT); `none`'s continued
    SFT is a distilling template stage without a Teacher, so it is not this."""
    return training_stages(cascade, model)[-1]


def student_steps(cascade: Cascade, plan: str) -> int:
    return sum(node.job.max_steps for node in cascade.plans[plan]
               if node.model == STUDENT and from_distilling_template(cascade, node))


def row_label(variant: Variant, plan: str, budget_steps: int) -> str:
    if variant.name == PER_TEACHER:
        return f"bottom-up, each Teacher {budget_steps} steps (paper layout)"
    if variant.name == CONTINUED:
        return "bottom-up, one schedule over the chain"
    if variant.name == CHAIN:
        return plan
    if variant.name.startswith(SUB_CHAIN):
        return "bottom-up " + " → ".join(variant.chain)
    label = f"direct from {variant.chain[-1]}"
    return label + (f" (Teacher set {variant.teacher_set})" if variant.teacher_set else "")


def collect_rows(jobs: list[Job], cascades: dict[Path, Cascade]) -> list[Row]:
    rows: dict[tuple[str, str], Row] = {}
    for job in jobs:
        cascade = cascades[job.recipe]
        results = json.loads((job.output / "cascade.json").read_text())["plans"]
        for plan in job.variant.plans:
            result = results[plan]["result"]
            key = (job.variant.name, plan)
            if key not in rows:
                teacher = None if plan == "none" else job.variant.chain[-1]
                steps = student_steps(cascade, plan)
                budget = steps // len(job.variant.chain)
                rows[key] = Row(row_label(job.variant, plan, budget),
                                job.variant.name, plan, teacher, job.variant.teacher_set, steps, {}, {}, {}, {})
            rows[key].accuracy[job.seed] = result["accuracy"]
            rows[key].categories[job.seed] = result.get("categories", {})
            rows[key].metrics[job.seed] = {name: result[name] for name in EXTRA_METRICS if name in result}
            student = cascade.students[plan]
            rows[key].ablated[job.seed] = ablated_accuracy(student.output, student.directory / "eval",
                                                           cascade.recipe)
    return list(rows.values())


def evaluated(model: Path, folder: Path, recipe: Recipe, split: str, images: str = "real") -> dict:
    """The benchmark result of the model in `model` on test or val, answers and result kept in `folder`; with
    `images` blank or shuffled, the vision-use check's (in `folder/<answers>-<images>-images`)."""
    evaluation = recipe.evaluation
    data = evaluation.data if split == "test" else evaluation.val
    name = evaluation.answers_folder(data) + ("" if images == "real" else f"-{images}-images")
    return evaluate(model, evaluation.benchmark, data, folder / name, evaluation.batch_size, images=images)


def ablated_accuracy(model: Path, folder: Path, recipe: Recipe) -> dict[str, float]:
    """Test accuracy with the images blank and shuffled."""
    return {use: evaluated(model, folder, recipe, "test", use)["accuracy"] for use in ABLATIONS}


def plateau(node: Node, recipe: Recipe) -> dict | None:
    """Val accuracy at the last checkpoint at or before 3/4 of a stage's steps, and at its end."""
    if recipe.evaluation.val is None:
        return None
    steps = node.job.max_steps
    earlier = [(step, path) for step, path in numbered_checkpoints(node.directory) if step <= PLATEAU_FRACTION * steps]
    if not earlier:
        return {"steps": steps, "measured": False,
                "why": f"no checkpoint at or before step {PLATEAU_FRACTION * steps:.0f}: set save_steps to a "
                       "quarter of max_steps (and keep save_total_limit >= 2)"}
    step, path = earlier[-1]
    before = evaluated(path, node.directory / "eval" / path.name, recipe, "val")["accuracy"]
    after = evaluated(node.output, node.directory / "eval", recipe, "val")["accuracy"]
    return {"steps": steps, "measured": True, "val_at_step": step, "val_before": before, "val_final": after,
            "moved": after - before}


def teacher_entry(recipe: Recipe, cascade: Cascade, name: str, teacher_set: int, root: Path) -> dict:
    """A Teacher's size and test accuracy, and for one trained here, whether its training reached a plateau."""
    label = f"teacher-{name}"
    if trains_itself(cascade, label):
        node = own_training(cascade, label)
        reached = None if teacher_set else plateau(node, recipe)
        model, folder = node.output, node.directory / "eval"
    else:  # a ready checkpoint
        model, folder, reached = Path(recipe.teacher(name).model.path), root / "eval" / label, None
    result = evaluated(model, folder, recipe, "test")
    return {"name": name, "teacher_set": teacher_set, "llm_parameters": llm_parameters(model),
            "test_accuracy": result["accuracy"], "test_categories": result.get("categories", {}),
            "test_metrics": {name: result[name] for name in EXTRA_METRICS + CEILING_METRICS if name in result},
            "ablated": ablated_accuracy(model, folder, recipe), "plateau": reached}


def teacher_entries(recipe: Recipe, chain_cascade: Cascade, jobs: list[Job], cascades: dict[Path, Cascade],
                    root: Path) -> list[dict]:
    def holding(name: str) -> Cascade:
        """A cascade of Teacher set 0 that has Teacher `name` (the chain's, unless its plans leave it out)."""
        return next((cascades[job.recipe] for job in jobs if not job.variant.teacher_set
                     and any(node.model == f"teacher-{name}" for node in cascades[job.recipe].stages)), chain_cascade)

    entries = [teacher_entry(recipe, holding(name), name, 0, root) for name in recipe.chain]
    entries += [teacher_entry(recipe, cascades[job.recipe], job.variant.chain[0], job.variant.teacher_set, root)
                for job in jobs if job.variant.teacher_set and job.seed == jobs[0].seed]
    return entries


def student_entry(recipe: Recipe, jobs: list[Job], cascades: dict[Path, Cascade]) -> dict:
    """The Student after its own training (its SFT, or its pretraining where every plan starts there), per seed,
    before any KD or continued training."""
    per_seed = {}
    node = None
    for job in jobs:
        if job.variant.name == CHAIN:
            node = own_training(cascades[job.recipe], STUDENT)
            result = evaluated(node.output, node.directory / "eval", recipe, "test")
            per_seed[job.seed] = {"accuracy": result["accuracy"], "categories": result.get("categories", {}),
                                  "ablated": ablated_accuracy(node.output, node.directory / "eval", recipe)}
    accuracy = [entry["accuracy"] for entry in per_seed.values()]
    colour = [entry["categories"]["colour"] for entry in per_seed.values() if "colour" in entry["categories"]]
    return {"llm_parameters": llm_parameters(node.output), "own_training": node.job.kind, "sft_per_seed": per_seed,
            "sft_accuracy": describe(accuracy), "sft_colour": describe(colour) if colour else None}


def row_entry(row: Row, baselines: dict[str, Row]) -> dict:
    entry = {"label": row.label, "variant": row.variant, "plan": row.plan, "teacher": row.teacher,
             "teacher_set": row.teacher_set, "student_steps": row.student_steps, "seeds": sorted(row.accuracy),
             "accuracy_per_seed": row.accuracy, **describe(list(row.accuracy.values()))}
    for name, baseline in baselines.items():
        if baseline is not row:
            entry[f"vs_{name}"] = paired(row.accuracy, baseline.accuracy)
    entry["metrics"] = {}
    for metric in EXTRA_METRICS:
        values = {seed: figures[metric] for seed, figures in row.metrics.items() if metric in figures}
        if values:
            entry["metrics"][metric] = {"per_seed": values, **describe(list(values.values()))}
            for name, baseline in baselines.items():
                if baseline is not row:
                    entry["metrics"][metric][f"vs_{name}"] = paired(
                        values, {seed: figures[metric] for seed, figures in baseline.metrics.items()})
    entry["ablated"] = {use: {"per_seed": {seed: values[use] for seed, values in row.ablated.items()},
                              **describe([values[use] for values in row.ablated.values()])} for use in ABLATIONS}
    return entry


def blind_baselines(recipe: Recipe) -> dict | None:
    key = recipe.evaluation.data / "answer_key.jsonl"
    if not key.is_file():
        return None
    return {"majority_by_category": majority_baseline(key, "category"),
            "majority_by_template": majority_baseline(key, "form")}


def ceiling(teachers: list[dict]) -> dict | None:
    """The best any model can score on test (answers with real uncertainty): soft accuracy and log-likelihood of
    the true answer distributions, read from a Teacher's result."""
    metrics = teachers[0].get("test_metrics", {}) if teachers else {}
    if "bayes_accuracy" not in metrics:
        return None
    return {"accuracy": metrics["bayes_accuracy"], "log_likelihood": metrics.get("bayes_log_likelihood")}


def write_summary(root: Path, recipe: Recipe, jobs: list[Job], cascades: dict[Path, Cascade],
                  wall_seconds: float, environment: dict) -> Path:
    """`environment`: the torch version, CPU kernel set and threads the study ran with (its figures vary with
    them by float rounding)."""
    chain_jobs = [job for job in jobs if job.variant.name == CHAIN]
    rows = collect_rows(jobs, cascades)
    chain_rows = {row.plan: row for row in rows if row.variant == CHAIN}
    baselines = {plan: chain_rows[plan] for plan in ("none", "direct") if plan in chain_rows}
    teachers = teacher_entries(recipe, cascades[chain_jobs[0].recipe], jobs, cascades, root)
    student = student_entry(recipe, jobs, cascades)
    parameters = {entry["name"]: entry["llm_parameters"] for entry in teachers if not entry["teacher_set"]}
    row_entries = [row_entry(row, baselines) for row in rows]
    gap = [{"teacher": entry["teacher"], "capacity_ratio": parameters[entry["teacher"]] / student["llm_parameters"],
            "gain_vs_none": entry["vs_none"]}
           for entry in row_entries
           if entry["plan"] == "direct" and not entry["teacher_set"] and "vs_none" in entry]
    summary = {
        "recipe": str(recipe.output), "seeds": sorted({job.seed for job in jobs}), "environment": environment,
        "benchmark": {"name": recipe.evaluation.benchmark, "test": str(recipe.evaluation.data),
                      "val": str(recipe.evaluation.val) if recipe.evaluation.val else None,
                      "blind": blind_baselines(recipe), "ceiling": ceiling(teachers)},
        "teachers": teachers, "student": student, "rows": row_entries,
        "gap_curve": sorted(gap, key=lambda point: point["capacity_ratio"]),
        "stage_wall_seconds": stage_seconds(jobs, cascades), "study_wall_seconds": wall_seconds,
    }
    summary["testbed_checks"] = check_testbed(summary)
    (root / "summary.json").write_text(json.dumps(summary, indent=1, sort_keys=False) + "\n")
    (root / "summary.md").write_text(summary_markdown(summary))
    plot_gap_curve(root / "gap.png", summary)
    plot_plans(root / "plans.png", summary)
    if any("log_likelihood" in row.get("metrics", {}) for row in summary["rows"]):
        plot_plans(root / "plans-loglik.png", summary, "log_likelihood",
                   "log-likelihood of the answer distribution (nats)")
    return root


def check_testbed(summary: dict) -> list[dict]:
    """Whether the setting can answer the question: Teachers apart in size and accuracy and trained to a plateau,
    a Student that reads the image with room below the largest Teacher, and plain KD that measurably helps."""
    checks = []

    def check(name: str, value: float, target: str, met: bool) -> None:
        checks.append({"check": name, "value": value, "target": target, "met": bool(met)})

    teachers = [entry for entry in summary["teachers"] if not entry["teacher_set"]]
    for smaller, larger in pairwise(teachers):
        ratio = larger["llm_parameters"] / smaller["llm_parameters"]
        check(f"LLM parameters {larger['name']} / {smaller['name']}", ratio, ">= 4", ratio >= 4)
        gain = larger["test_accuracy"] - smaller["test_accuracy"]
        check(f"test accuracy {larger['name']} - {smaller['name']}", gain, ">= 5 points", gain >= 5)
    largest = teachers[-1]
    top = summary["benchmark"].get("ceiling")
    if top:
        below = top["accuracy"] - largest["test_accuracy"]
        modal = largest["test_metrics"]["modal_accuracy"]
        check(f"ceiling - test accuracy of {largest['name']} (or its modal accuracy >= 85)", below,
              "<= 3 points", below <= 3 or modal >= 85)
    else:
        check(f"test accuracy of {largest['name']}", largest["test_accuracy"], ">= 85",
              largest["test_accuracy"] >= 85)
    for entry in [*teachers, *(row for row in summary["rows"] if row.get("variant") == "chain")]:
        name, real = (entry["name"], entry["test_accuracy"]) if "name" in entry else (entry["label"], entry["mean"])
        for use, ablated in entry.get("ablated", {}).items():
            value = ablated if isinstance(ablated, float) else ablated["mean"]
            check(f"{name}: real - {use} images", real - value, f">= {VISION_MARGIN:g} points",
                  real - value >= VISION_MARGIN)
    for entry in teachers:
        if entry["plateau"] and entry["plateau"]["measured"]:
            moved = entry["plateau"]["moved"]
            check(f"val change of {entry['name']} over its last quarter", moved, "< 1 point", abs(moved) < 1)
    student = summary["student"]
    after_sft = student.get("own_training", "sft") == "sft"
    if student["sft_colour"] and after_sft:
        colour = student["sft_colour"]["mean"]
        check("Student colour accuracy after SFT", colour, ">= 50", colour >= 50)
    none = next((row for row in summary["rows"] if row.get("variant") == "chain" and row["plan"] == "none"), None)
    trained = student["sft_accuracy"]["mean"] if after_sft or not none else none["mean"]
    blind = summary["benchmark"]["blind"]
    if blind:
        above = trained - 100 * blind["majority_by_template"]["overall"]
        check(f"Student after {'SFT' if after_sft else 'none'} - template-aware blind guesser", above,
              ">= 10 points", above >= 10)
    room = teachers[0]["test_accuracy"] - trained
    check(f"{teachers[0]['name']} - Student after {'SFT' if after_sft else 'none'}", room, ">= 10 points",
          room >= 10)
    if none and none["n"] > 1:
        check("seed std of the Student without KD (none)", none["std"], "<= 3 points", none["std"] <= 3)
    for teacher in {teacher['name']: teacher for teacher in (teachers[0], teachers[-1])}.values():
        direct = next((row for row in summary["rows"] if row["plan"] == "direct" and not row["teacher_set"]
                       and row["teacher"] == teacher["name"]), None)
        if direct and direct.get("vs_none", {}).get("n", 0) > 1:
            gain, se = direct["vs_none"]["mean"], direct["vs_none"]["se"]
            check(f"{direct['label']} - none, in standard errors", gain / se if se else math.inf, "> 2",
                  gain > 2 * se)
    return checks


def stage_seconds(jobs: list[Job], cascades: dict[Path, Cascade]) -> float:
    """Wall time of every stage of the study, each counted once (from the stage manifests)."""
    seen: dict[str, float] = {}
    for job in jobs:
        for node in cascades[job.recipe].stages:
            manifest = node.directory / "manifest.json"
            if node.hash not in seen and manifest.is_file():
                seen[node.hash] = json.loads(manifest.read_text()).get("wall_seconds") or 0.0
    return sum(seen.values())


def _interval(stats: dict) -> str:
    return f"[{stats['ci95'][0]:.1f}, {stats['ci95'][1]:.1f}]" if stats.get("n", 0) > 1 else "–"


def _difference(stats: dict | None, digits: str = ".1f") -> str:
    if not stats or not stats.get("n"):
        return "–"
    return f"{stats['mean']:+{digits}} ± {stats['se']:{digits}}" if stats["n"] > 1 else f"{stats['mean']:+{digits}}"


def _figure(value: float | None, digits: str) -> str:
    return "–" if value is None else f"{value:{digits}}"


def summary_markdown(summary: dict) -> str:
    lines = ["# Study summary", "", f"Seeds: {', '.join(map(str, summary['seeds']))}. Test accuracy in percent.", ""]
    blind = summary["benchmark"]["blind"]
    if blind:
        lines += [f"Blind guessers: majority answer per category {100 * blind['majority_by_category']['overall']:.1f}, "
                  f"per question template {100 * blind['majority_by_template']['overall']:.1f}.", ""]
    top = summary["benchmark"].get("ceiling")
    if top:
        lines += [f"Ceiling (the true answer distributions' modal answer): soft accuracy {top['accuracy']:.1f}, "
                  f"log-likelihood {top['log_likelihood']:.3f} nats.", ""]
    lines += ["| Teacher | set | LLM parameters | test | modal | log-lik. | ECE | blank images | shuffled images "
              "| val at 3/4 → end |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for entry in summary["teachers"]:
        plateau = entry["plateau"]
        moved = (f"{plateau['val_before']:.1f} → {plateau['val_final']:.1f} (step {plateau['val_at_step']} → "
                 f"{plateau['steps']})" if plateau and plateau["measured"] else "–")
        metrics = entry.get("test_metrics", {})
        ablated = entry.get("ablated", {})
        lines.append(f"| {entry['name']} | {entry['teacher_set']} | {entry['llm_parameters']:,} | "
                     f"{entry['test_accuracy']:.1f} | {_figure(metrics.get('modal_accuracy'), '.1f')} | "
                     f"{_figure(metrics.get('log_likelihood'), '.3f')} | {_figure(metrics.get('ece'), '.1f')} | "
                     f"{_figure(ablated.get('blank'), '.1f')} | {_figure(ablated.get('shuffled'), '.1f')} | {moved} |")
    student = summary["student"]
    colour = student["sft_colour"]
    lines += ["", f"Student ({student['llm_parameters']:,} LLM parameters) after its "
                  f"{student.get('own_training', 'sft').replace('sft', 'SFT')}: "
                  f"{student['sft_accuracy']['mean']:.1f} ± {student['sft_accuracy']['std']:.1f} overall"
                  + (f", colour {colour['mean']:.1f} ± {colour['std']:.1f}" if colour else "") + " (mean ± std).", ""]
    lines += ["| row | Student steps | seeds | mean | std | 95% interval | − none (± se) | − direct (± se) |",
              "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |"]
    for row in summary["rows"]:
        lines.append(f"| {row['label']} | {row['student_steps']} | {row['n']} | {row['mean']:.1f} | {row['std']:.1f} | "
                     f"{_interval(row)} | {_difference(row.get('vs_none'))} | {_difference(row.get('vs_direct'))} |")
    extra = [(metric, row) for row in summary["rows"] for metric in row.get("metrics", {})]
    if extra:
        lines += ["", "Other figures (mean ± std over seeds; differences paired by seed, ± se): modal accuracy (%), "
                      "log-likelihood of the answer distribution (nats, higher is better), ECE (%); vision-use check: "
                      "accuracy with the images blank and shuffled.", "",
                  "| row | modal | − none | log-lik. | − none | − direct | ECE | − none | blank | shuffled |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for row in summary["rows"]:
            metrics = row.get("metrics", {})
            cells = []
            for metric, digits, against in (("modal_accuracy", ".1f", ("none",)),
                                            ("log_likelihood", ".3f", ("none", "direct")), ("ece", ".1f", ("none",))):
                stats = metrics.get(metric)
                cells.append(f"{stats['mean']:{digits}} ± {stats['std']:{digits}}" if stats else "–")
                cells += [_difference(stats.get(f"vs_{name}") if stats else None, digits) for name in against]
            cells += [_figure(row["ablated"][use]["mean"], ".1f") if row.get("ablated") else "–"
                      for use in ABLATIONS]
            lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    lines += ["", "| Teacher | capacity ratio | KD gain over none (± se) | 95% interval |",
              "| --- | ---: | ---: | --- |"]
    for point in summary["gap_curve"]:
        lines.append(f"| {point['teacher']} | {point['capacity_ratio']:.1f} | {_difference(point['gain_vs_none'])} | "
                     f"{_interval(point['gain_vs_none'])} |")
    lines += ["", "| testbed check | value | target | met |", "| --- | ---: | --- | --- |"]
    lines += [f"| {entry['check']} | {entry['value']:.2f} | {entry['target']} | {'yes' if entry['met'] else 'no'} |"
              for entry in summary["testbed_checks"]]
    lines += ["", f"Wall time: {summary['stage_wall_seconds'] / 60:.0f} min of stages; this run of the study "
                  f"{summary['study_wall_seconds'] / 60:.0f} min."]
    if environment := summary.get("environment"):
        lines += [f"Ran with torch {environment['torch']}, CPU kernels {environment['cpu_capability']}, "
                  f"{environment['workers']} workers of {environment['threads_per_worker']} thread(s). Float rounding "
                  "differs with the kernel set and thread count, and it moves each seed's training about as much as "
                  "another seed would (docs/results.md: the demo under each kernel set): read the intervals, not the "
                  "means."]
    lines.append("")
    return "\n".join(lines)
