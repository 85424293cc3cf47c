"""SIGKILL a training stage at random instants, rerun it after each kill, and check that it ends with the weights of
an uninterrupted run, bit for bit, without a single file deleted by hand.

    python scripts/kill_test.py stage.yaml --work runs/kill-test --kills 22 --seed 0

The stage runs as `llava-ckd train` in a child process (this script, `child` mode), once uninterrupted (the
reference), then again and again in another folder: each run is killed at an instant drawn with the seed, either
some time after it started (while it imports, loads the data or the checkpoint) or some time after its training
began. The children sleep `--save-delay` seconds before each part of a save (weights, processor, optimizer and
scheduler, RNG state, trainer_state.json, rotation of old checkpoints; weights and processor of `final/`), so that
many kills land inside saves; the last kill waits for the save of `final/`. Then one more run goes to the end.

Each child appends what it is doing to a marker file; the last marker before a kill says where the kill landed.
The table printed at the end gives, for each kill, where it landed, what it left (complete checkpoints, any
`checkpoint-N` folder that is not complete, saves cut short in their staging folders) and which checkpoint the next
run resumed from. Nothing is ever deleted by this script: the runs have to cope with what each kill left. The exit
status is 1 if any run failed or the final weights (or train_loss) differ from the reference's; `--json` writes
the whole report.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

LAUNCH, TRAIN_BEGIN, FINAL_BEGIN = "launch", "train begin", "save final begin"


# ---- the child: `llava-ckd train` with saves slowed down and markers of what it is doing ----

def mark(markers: Path, event: str) -> None:
    with markers.open("a") as file:
        file.write(f"{time.time():.6f} {event}\n")


def marked(function, markers: Path, event, delay: float = 0.0):
    """`function`, which first marks `event` (a string, or a callable of the call's arguments) and sleeps `delay`."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        mark(markers, event(*args) if callable(event) else event)
        time.sleep(delay)
        return function(*args, **kwargs)
    return wrapper


def run_child(config: Path, output_dir: Path, markers: Path, save_delay: float) -> None:
    mark(markers, LAUNCH)
    import transformers.trainer
    from transformers import ProcessorMixin, Trainer, TrainerState

    import llava_ckd.train.stage as stage
    import llava_ckd.train.trainer
    from llava_ckd.cli import main
    from llava_ckd.train.trainer import StageTrainer

    def save_checkpoint(method):
        @functools.wraps(method)
        def wrapper(self, *args, **kwargs):
            mark(markers, f"save checkpoint-{self.state.global_step} begin")
            method(self, *args, **kwargs)
            mark(markers, f"save checkpoint-{self.state.global_step} end")
        return wrapper

    def save_final(function):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            mark(markers, FINAL_BEGIN)
            folder = function(*args, **kwargs)
            mark(markers, "save final end")
            return folder
        return wrapper

    StageTrainer.train = marked(StageTrainer.train, markers, TRAIN_BEGIN)
    StageTrainer._save_checkpoint = save_checkpoint(StageTrainer._save_checkpoint)
    stage.save_final = save_final(stage.save_final)
    parts = [(Trainer, "save_model", "weights"), (ProcessorMixin, "save_pretrained", "processor"),
             (Trainer, "_save_optimizer_and_scheduler", "optimizer and scheduler"),
             (Trainer, "_save_rng_state", "rng state"), (TrainerState, "save_to_json", "trainer_state.json"),
             (transformers.trainer, "rotate_checkpoints", "the trainer's rotation inside checkpoint.partial"),
             (llava_ckd.train.trainer, "rotate_checkpoints", "rotation of old checkpoints")]
    for owner, name, part in parts:
        setattr(owner, name, marked(getattr(owner, name), markers, f"part {part}", save_delay))
    main(["train", str(config), "--set", f"output_dir={output_dir}"])
    mark(markers, "exit")


# ---- the parent: kills, reruns, the report ----

@dataclass
class Run:
    """One child run: killed (with where the kill landed) or run to its end."""
    number: int
    anchor: str | None = None           # the marker the kill instant is drawn after (None: not killed)
    delay_s: float | None = None        # drawn seconds after the anchor
    killed_at_s: float | None = None    # seconds after the run's launch
    landed: str = ""                    # where the kill landed (from the last marker)
    inside_save: str | None = None      # "checkpoint-N" or "final" when it landed inside a save
    complete_left: list[str] = field(default_factory=list)     # complete checkpoints the kill left
    incomplete_left: list[str] = field(default_factory=list)   # checkpoint-N folders it left that are not complete
    partial_left: list[str] = field(default_factory=list)      # saves it cut short, in their staging folders
    exit_code: int | None = None
    resumed_from: str | None = None     # the checkpoint this run resumed from, "start", or None: killed before


def read_markers(path: Path) -> list[tuple[float, str]]:
    if not path.is_file():
        return []
    lines = (line.split(" ", 1) for line in path.read_text().splitlines() if " " in line)
    return [(float(stamp), event) for stamp, event in lines]


def where_it_landed(markers: list[tuple[float, str]]) -> tuple[str, str | None]:
    """A description of the last thing the run was doing, and the save it was inside of (if any)."""
    saving, part = None, None
    for _, event in markers:
        if match := re.fullmatch(r"save (checkpoint-\d+|final) begin", event):
            saving, part = match.group(1), None
        elif re.fullmatch(r"save (checkpoint-\d+|final) end", event):
            saving, part = None, None
        elif event.startswith("part "):
            part = event.removeprefix("part ")
    last = markers[-1][1] if markers else "nothing (before Python started)"
    if saving:
        return f"inside save of {saving}" + (f", at {part}" if part else ", before its first part"), saving
    if last == LAUNCH:
        return "starting up (imports, data, model, checkpoint lookup)", None
    if last == TRAIN_BEGIN:
        return "training, before this run's first save", None
    if match := re.fullmatch(r"save (checkpoint-\d+) end", last):
        return f"training, after saving {match.group(1)}", None
    return f"after '{last}'", None


def checkpoints(output_dir: Path, complete: bool) -> list[str]:
    from llava_ckd.train.stage import checkpoint_complete

    found = [path for path in output_dir.glob("checkpoint-*")
             if re.fullmatch(r"checkpoint-\d+", path.name) and checkpoint_complete(path) == complete]
    return [path.name for path in sorted(found, key=lambda path: int(path.name.split("-")[1]))]


def partial_saves(output_dir: Path) -> list[str]:
    from llava_ckd.train.trainer import CHECKPOINT_STAGING

    staging = output_dir / CHECKPOINT_STAGING
    found = [f"{staging.name}/{path.name}" for path in staging.iterdir()] if staging.is_dir() else []
    return found + (["final.partial"] if (output_dir / "final.partial").exists() else [])


def resumed_from(log_text: str, markers: list[tuple[float, str]]) -> str | None:
    if TRAIN_BEGIN not in (event for _, event in markers):
        return None
    resumed = re.search(r"resuming from \S*?(checkpoint-\d+)", log_text)
    return resumed.group(1) if resumed else "start"


class Child:
    def __init__(self, script: Path, config: Path, output_dir: Path, work: Path, save_delay: float, name: str):
        self.markers = work / "markers" / f"{name}.txt"
        self.log = work / "logs" / f"{name}.log"
        for folder in (self.markers.parent, self.log.parent):
            folder.mkdir(parents=True, exist_ok=True)
        self.markers.unlink(missing_ok=True)
        self.launched = time.time()
        command = [sys.executable, str(script), "child", str(config), str(output_dir), str(self.markers),
                   "--save-delay", str(save_delay)]
        with self.log.open("w") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                            env=dict(os.environ, OMP_NUM_THREADS="1"))

    def marker_time(self, event: str) -> float | None:
        return next((stamp for stamp, name in read_markers(self.markers) if name == event), None)

    def kill_after(self, anchor: str, delay: float, timeout: float) -> float | None:
        """SIGKILL `delay` seconds after the `anchor` marker; the kill's time after launch, None if it ended first."""
        deadline = time.time() + timeout
        while self.process.poll() is None:
            start = self.launched if anchor == LAUNCH else self.marker_time(anchor)
            if start is not None and time.time() >= start + delay:
                killed_at = time.time()
                self.process.send_signal(signal.SIGKILL)
                self.process.wait()
                return killed_at - self.launched
            if time.time() > deadline:
                self.process.kill()
                raise TimeoutError(f"{self.log}: no '{anchor}' within {timeout:.0f} s")
            time.sleep(0.005)
        return None


def kill_test(config: Path, work: Path, kills: int, seed: int, save_delay: float, window: float,
              timeout: float) -> dict:
    script = Path(__file__).resolve()
    rng = random.Random(seed)
    started = time.time()

    reference = Child(script, config, work / "reference", work, 0.0, "reference")
    reference.process.wait()
    if reference.process.returncode != 0:
        raise SystemExit(f"the uninterrupted run failed: see {reference.log}")
    startup_s = reference.marker_time(TRAIN_BEGIN) - reference.launched

    output_dir = work / "killed"
    runs: list[Run] = []
    for number in range(kills + 1):
        if number == kills:
            run = Run(number)                                        # the last run goes to the end
        elif number == kills - 1:  # the last kill: inside the save of final/, after its weights are in final.partial
            run = Run(number, FINAL_BEGIN, rng.uniform(1.2 * save_delay, 1.9 * save_delay))
        elif number == 0 or rng.random() < 0.25:                     # the first: before the first checkpoint
            run = Run(number, LAUNCH, rng.uniform(0, startup_s))
        else:
            run = Run(number, TRAIN_BEGIN, rng.uniform(0, window))
        child = Child(script, config, output_dir, work, save_delay, f"run-{number:02d}")
        if run.anchor:
            run.killed_at_s = child.kill_after(run.anchor, run.delay_s, timeout)
            if run.killed_at_s is None:
                child.process.wait()
        else:
            child.process.wait(timeout=timeout)
        run.exit_code = child.process.returncode
        markers = read_markers(child.markers)
        run.resumed_from = resumed_from(child.log.read_text(), markers)
        if run.killed_at_s is not None:
            run.landed, run.inside_save = where_it_landed(markers)
            run.complete_left = checkpoints(output_dir, complete=True)
            run.incomplete_left = checkpoints(output_dir, complete=False)
            run.partial_left = partial_saves(output_dir)
        runs.append(run)
        if run.exit_code not in (0, -signal.SIGKILL):
            print(f"run {number} failed with exit status {run.exit_code}: see {child.log}", file=sys.stderr)
            break
        if run.anchor and run.killed_at_s is None:
            print(f"run {number} ended before its kill (the stage is too short for {kills} kills)", file=sys.stderr)
            break

    return {"runs": [asdict(run) for run in runs], "wall_s": time.time() - started,
            "reference_wall_s": reference_wall(reference), "startup_s": startup_s, "save_delay_s": save_delay,
            **compare(work / "reference" / "final", output_dir / "final")}


def reference_wall(child: Child) -> float:
    return read_markers(child.markers)[-1][0] - child.launched


def compare(reference: Path, result: Path) -> dict:
    import torch
    from safetensors.torch import load_file

    if not (result / "model.safetensors").is_file():
        return {"weights_equal": False, "train_loss_equal": False}
    expected, found = load_file(reference / "model.safetensors"), load_file(result / "model.safetensors")
    metrics = [json.loads((folder / "metrics.json").read_text()) for folder in (reference, result)]
    return {"weights_equal": expected.keys() == found.keys() and all(torch.equal(expected[name], found[name])
                                                                      for name in expected),
            "train_loss_equal": metrics[0]["train_loss"] == metrics[1]["train_loss"],
            "global_step": metrics[1]["global_step"]}


def print_report(report: dict) -> None:
    runs = report["runs"]
    print("| run | drawn instant | killed at | where the kill landed | complete checkpoints left | "
          "incomplete checkpoint-N left | partial save left | next run resumed from |")
    print("|---|---|---|---|---|---|---|---|")
    for run, following in zip(runs, runs[1:] + [None], strict=True):
        if run["killed_at_s"] is None:
            continue
        complete = run["complete_left"]
        resumed = following["resumed_from"] or "(killed before it looked)"
        print(f"| {run['number']} | {run['delay_s']:.2f} s after {run['anchor']} | {run['killed_at_s']:.2f} s | "
              f"{run['landed']} | {f'{len(complete)}, newest {complete[-1]}' if complete else 'none'} | "
              f"{', '.join(run['incomplete_left']) or 'none'} | {', '.join(run['partial_left']) or '-'} | "
              f"{resumed} |")
    killed = [run for run in runs if run["killed_at_s"] is not None]
    inside = [run for run in killed if run["inside_save"]]
    parts = Counter(run["landed"].split(", at ")[-1] for run in inside if ", at " in run["landed"])
    print(f"\nkills: {len(killed)}; inside a save: {len(inside)} "
          f"({sum(run['inside_save'] != 'final' for run in inside)} of checkpoints, "
          f"{sum(run['inside_save'] == 'final' for run in inside)} of final/); "
          f"before the first checkpoint: {sum(not run['complete_left'] for run in killed)}; "
          f"incomplete checkpoint-N folders left: {sum(len(run['incomplete_left']) for run in killed)}")
    print("inside saves, by part: " + ", ".join(f"{part} {count}" for part, count in sorted(parts.items())))
    print(f"runs: {len(runs)}, failed: {sum(run['exit_code'] not in (0, -signal.SIGKILL) for run in runs)}; "
          f"final weights equal to the uninterrupted run's, bit for bit: {report['weights_equal']}; "
          f"train_loss equal: {report['train_loss_equal']}")
    print(f"wall time: {report['wall_s']:.0f} s (uninterrupted run {report['reference_wall_s']:.0f} s, "
          f"of which {report['startup_s']:.1f} s start-up; saves slowed by {report['save_delay_s']} s a part)")


def passed(report: dict) -> bool:
    runs = report["runs"]
    return (report["weights_equal"] and report["train_loss_equal"] and runs[-1]["exit_code"] == 0
            and runs[-1]["anchor"] is None and all(run["exit_code"] in (0, -signal.SIGKILL) for run in runs))


def main() -> None:
    if sys.argv[1:2] == ["child"]:
        parser = argparse.ArgumentParser(prog="kill_test.py child")
        parser.add_argument("config", type=Path)
        parser.add_argument("output_dir", type=Path)
        parser.add_argument("markers", type=Path)
        parser.add_argument("--save-delay", type=float, default=0.0)
        args = parser.parse_args(sys.argv[2:])
        run_child(args.config, args.output_dir, args.markers, args.save_delay)
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path, help="a stage YAML (its output_dir is replaced by folders in --work)")
    parser.add_argument("--work", type=Path, required=True, help="a new folder for the runs, markers and logs")
    parser.add_argument("--kills", type=int, default=22)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save-delay", type=float, default=0.2, help="seconds slept before each part of a save")
    parser.add_argument("--window", type=float, default=3.0,
                        help="kills after training began are drawn within this many seconds")
    parser.add_argument("--timeout", type=float, default=600, help="seconds any one run may take")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()
    if args.work.exists():
        parser.error(f"--work {args.work} exists: give a new folder")
    report = kill_test(args.config, args.work, args.kills, args.seed, args.save_delay, args.window, args.timeout)
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    sys.exit(0 if passed(report) else 1)


if __name__ == "__main__":
    main()
