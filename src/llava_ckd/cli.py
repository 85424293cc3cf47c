"""The `llava-ckd` command: one entry point, one subcommand per job.

A user error (a config, data, model or benchmark file that is missing or cannot be used) ends the command with
one `error: ...` line and exit status 1; `llava-ckd --debug COMMAND ...` shows its traceback instead.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def _make_data(args: argparse.Namespace) -> None:
    from llava_ckd.data.synthetic import SyntheticSpec
    from llava_ckd.demo import prepare_synthetic

    forms = tuple(args.forms.split(",")) if args.forms else None
    spec = SyntheticSpec(seed=args.seed, n_train=args.train, n_val=args.val, n_test=args.test,
                         n_captions=args.captions, max_objects=args.max_objects, forms=forms,
                         blend=args.blend, caption_turn=args.caption_turn)
    prepare_synthetic(Path(args.out), spec)


def _train_vision(args: argparse.Namespace) -> None:
    from llava_ckd.train.vision import train_vision_encoder

    train_vision_encoder(Path(args.data), Path(args.out), steps=args.steps, seed=args.seed)


def _demo(args: argparse.Namespace) -> None:
    from llava_ckd.demo import DemoSettings, run_demo

    report = run_demo(DemoSettings(out=Path(args.out), seeds=args.seeds))
    print(report.read_text())


def _train(args: argparse.Namespace) -> None:
    from llava_ckd.config import load_stage_config
    from llava_ckd.train.stage import run_stage

    run_stage(load_stage_config(Path(args.config), overrides=args.set), restart=args.restart)


def _cascade(args: argparse.Namespace) -> None:
    from llava_ckd.cascade import describe, plan_cascade, run_cascade
    from llava_ckd.engines import processes

    cascade = plan_cascade(Path(args.recipe), missing_ok=args.dry_run)
    if processes().is_main_process:
        print(describe(cascade), flush=True)
    if not args.dry_run and (results := run_cascade(cascade, restart=args.restart)) is not None:
        print(results.read_text())


def _plan(args: argparse.Namespace) -> None:
    import json
    from dataclasses import replace

    from llava_ckd.cascade import plan_cascade
    from llava_ckd.config import ConfigError
    from llava_ckd.models.shapes import ImageSize
    from llava_ckd.plan.cost import Assumptions, DataSize, Hardware, plan_costs
    from llava_ckd.plan.render import render, to_json

    hardware = Hardware(args.gpus, args.gpu_memory, args.engine, args.gpu_tflops, args.mfu).check()
    files = {}
    for given in args.data:
        path, sep, size = given.partition("=")
        if not sep:
            raise ConfigError(f"--data: {given!r} is not FILE=SAMPLES,TEXT_TOKENS[,RESPONSE_TOKENS]")
        files[Path(path)] = DataSize.parse(size, args.images_per_sample)
    default = None
    if args.samples is not None or args.tokens_per_sample is not None:
        default = DataSize.parse(f"{args.samples},{args.tokens_per_sample}"
                                 + (f",{args.response_tokens}" if args.response_tokens else ""), args.images_per_sample)
    assumptions = Assumptions(files, default, args.sample or None)
    if args.image_size is not None:
        try:
            assumptions = replace(assumptions, image_size=ImageSize.parse(args.image_size))
        except ValueError as error:
            raise ConfigError(f"--image-size: {error}") from None
    plan = plan_costs(plan_cascade(Path(args.recipe), missing_ok=True), hardware, assumptions)
    print(render(plan))
    if args.json:
        Path(args.json).write_text(json.dumps(to_json(plan), indent=2) + "\n", encoding="utf-8")


def _study(args: argparse.Namespace) -> None:
    from llava_ckd.study.run import run_study

    out = run_study(Path(args.recipe), list(range(args.seeds)), args.teacher_sets, args.workers,
                    Path(args.out) if args.out else None, layouts=not args.no_layouts,
                    with_sub_chains=args.sub_chains, plans=tuple(args.plans.split(",")) if args.plans else None)
    print((out / "summary.md").read_text())
    print(f"summary.json, gap.png and plans.png in {out}")


def _cache_teacher(args: argparse.Namespace) -> None:
    from llava_ckd.distill.cache import write_teacher_cache
    from llava_ckd.files import DataError
    from llava_ckd.models.build import load_vlm

    if not Path(args.data).is_file():  # before loading the Teacher, which takes long
        raise DataError(f"data file not found: {args.data}")
    if args.images and not Path(args.images).is_dir():
        raise DataError(f"image folder not found: {args.images}")
    model, processor = load_vlm(args.teacher, args.dtype)
    out = write_teacher_cache(model, processor, Path(args.data), Path(args.images) if args.images else None,
                              Path(args.out), args.top_k, args.max_length, args.batch_size, args.samples_per_shard)
    print(f"Teacher signals in {out}")


def _score(args: argparse.Namespace) -> None:
    import json

    from llava_ckd.eval.answers import read_answers
    from llava_ckd.eval.registry import get_benchmark

    if args.json:  # a failed score must not leave an earlier result behind
        Path(args.json).unlink(missing_ok=True)
    benchmark = get_benchmark(args.benchmark)
    result = benchmark.score(Path(args.data), read_answers(Path(args.answers)))
    print(benchmark.render(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


def _eval(args: argparse.Namespace) -> None:
    from llava_ckd.eval.registry import get_benchmark
    from llava_ckd.eval.run import evaluate, vision_check, vision_warning
    from llava_ckd.models.build import checkpoint_location

    if args.batch_size < 1:
        sys.exit(f"error: --batch-size must be at least 1, got {args.batch_size}")
    checkpoint_location(args.model)  # a local folder that is not there: said as it was typed, before any work
    out = Path(args.out) if args.out else Path(args.model) / "eval" / args.benchmark
    if not args.vision_check:
        result = evaluate(Path(args.model), args.benchmark, Path(args.data), out, args.batch_size,
                          restart=args.restart)
        print(get_benchmark(args.benchmark).render(result))
        print(f"answers and result.json in {out}")
        return
    results = vision_check(Path(args.model), args.benchmark, Path(args.data), out, args.batch_size,
                           restart=args.restart)
    print(get_benchmark(args.benchmark).render(results["real"]))
    print("vision-use check, accuracy: " + ", ".join(f"{use} images {result['accuracy']:.2f}"
                                                     for use, result in results.items()))
    if warning := vision_warning(results):
        print(warning)
    print(f"answers and result.json in {out} (blank and shuffled images in its subfolders)")


def _convert(args: argparse.Namespace) -> None:
    from llava_ckd.eval.answers import read_answers
    from llava_ckd.eval.submission import write_submission

    answers = read_answers(Path(args.answers))
    print(write_submission(args.benchmark, Path(args.data), answers, Path(args.out)))


def schema(name: str):
    """The schema of a stage file or a recipe file."""
    if name == "stage":
        from llava_ckd.config import StageConfig

        return StageConfig
    from llava_ckd.cascade.recipe import Recipe

    return Recipe


class Parser(argparse.ArgumentParser):
    """A parser whose --help ends with the fields of the file its command reads, from their schema."""

    def __init__(self, *args, file_schema: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.file_schema = file_schema

    def format_help(self) -> str:
        if self.file_schema is None:
            return super().format_help()
        from llava_ckd.options import options, text_table

        return (f"{super().format_help()}\nfields of the {self.file_schema} file:\n"
                f"{text_table(options(schema(self.file_schema)))}\n")


def _options(args: argparse.Namespace) -> None:
    from llava_ckd.options import markdown_table, options, text_table

    rows = options(schema(args.file))
    print(markdown_table(rows) if args.markdown else text_table(rows))


PLAN_SAMPLE = 50_000
"""Records `plan` encodes per data file by default: a token count within a percent (its 95% error is printed) in
under a minute, however large the file."""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="llava-ckd", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true",
                        help="on a user error, show the traceback instead of the one `error:` line")
    commands = parser.add_subparsers(dest="command", required=True)

    make_data = commands.add_parser("make-data", help="render the synthetic shapes VQA benchmark")
    make_data.add_argument("--out", required=True, help="output folder")
    make_data.add_argument("--seed", type=int, default=0)
    make_data.add_argument("--train", type=int, default=20000, help="training conversations")
    make_data.add_argument("--val", type=int, default=500, help="validation questions")
    make_data.add_argument("--test", type=int, default=1000, help="test questions")
    make_data.add_argument("--captions", type=int, default=5000, help="caption pairs for pretraining")
    make_data.add_argument("--max-objects", type=int, default=6, help="objects per scene, at most (2-16)")
    make_data.add_argument("--forms", metavar="FORM,...",
                           help="ask only these question forms (default: all; see llava_ckd.data.synthetic)")
    make_data.add_argument("--blend", type=float, default=0.0, metavar="SHARE",
                           help="share of objects painted between two neighbouring colours, whose answers then "
                                "vary between annotators (10 answers per evaluation question, VQA soft accuracy)")
    make_data.add_argument("--caption-turn", action="store_true",
                           help="close every training conversation with a caption exchange (describe the image)")
    make_data.set_defaults(handler=_make_data)

    vision = commands.add_parser("train-vision",
                                 help="train the demo's shared vision encoder on the synthetic scenes")
    vision.add_argument("--data", required=True, help="folder written by make-data")
    vision.add_argument("--out", required=True, help="output folder (a CLIPVisionModel checkpoint)")
    vision.add_argument("--steps", type=int, default=600)
    vision.add_argument("--seed", type=int, default=0)
    vision.set_defaults(handler=_train_vision)

    demo = commands.add_parser("demo", help="the CPU demo: the study's setting with the shipped Teacher, KD against "
                               "the Student's own training at equal budget over paired seeds, report")
    demo.add_argument("--out", default="runs/demo", help="output folder (finished steps are reused)")
    demo.add_argument("--seeds", type=int, default=4, help="Student seeds 0..N-1")
    demo.set_defaults(handler=_demo)

    train = commands.add_parser("train", help="run one training stage (pretrain, sft or distill) from a YAML file",
                                file_schema="stage")
    train.add_argument("config", help="stage YAML")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config field, e.g. --set max_steps=10 (repeatable)")
    train.add_argument("--restart", action="store_true",
                       help="if the output folder holds work made from other inputs (config, data, images, "
                            "models), delete it and train from the start instead of refusing")
    train.set_defaults(handler=_train)

    cascade = commands.add_parser("cascade", help="run a cascade recipe: Teachers, then the Student of every plan "
                                  "(none, direct, top-down, bottom-up), then evaluation; finished stages are reused",
                                  file_schema="recipe")
    cascade.add_argument("recipe", help="cascade recipe YAML (see configs/cascade/demo.yaml)")
    cascade.add_argument("--dry-run", action="store_true", help="print the stages of each plan and run nothing")
    cascade.add_argument("--restart", action="store_true",
                         help="where a stage's folder holds work made from other inputs, delete it and train "
                              "that stage again instead of refusing")
    cascade.set_defaults(handler=_cascade)

    plan = commands.add_parser("plan", help="what a cascade recipe will cost before it runs: parameters, memory per "
                               "GPU under an engine, tokens, FLOPs and GPU-hours per stage and plan (nothing runs, "
                               "nothing is downloaded; missing data and weights are named)")
    plan.add_argument("recipe", help="cascade recipe YAML (e.g. configs/paper/ckd-qwen2.5-0.5b.yaml)")
    plan.add_argument("--gpus", type=int, default=8, help="GPUs the stages run on (default 8)")
    plan.add_argument("--gpu-memory", type=float, default=80.0, metavar="GB", help="memory per GPU, 10^9 bytes "
                      "(default 80)")
    plan.add_argument("--engine", default="ddp", help="ddp, zero2, zero3 or fsdp (default ddp)")
    plan.add_argument("--gpu-tflops", type=float, default=989.0, metavar="T",
                      help="peak dense bf16 TFLOPS per GPU (default 989: H100 SXM; A100 312)")
    plan.add_argument("--mfu", type=float, default=0.4, help="model FLOPs utilisation assumed (default 0.4)")
    plan.add_argument("--sample", type=int, default=PLAN_SAMPLE, metavar="N",
                      help=f"count tokens on N random records of each larger data file and scale up (the estimate's "
                           f"95%% error is printed; default {PLAN_SAMPLE:,}, about 30 s); 0: every record")
    plan.add_argument("--data", action="append", default=[], metavar="FILE=N,T[,R]",
                      help="data file FILE is absent: assume N samples of T text tokens (image tokens come from the "
                           "model), R of them labelled (default: all T); repeat per file")
    plan.add_argument("--samples", type=int, metavar="N", help="with --tokens-per-sample: the same for every absent "
                      "data file not given by --data")
    plan.add_argument("--tokens-per-sample", type=int, metavar="T")
    plan.add_argument("--response-tokens", type=int, metavar="R")
    plan.add_argument("--images-per-sample", type=int, default=1, metavar="I", help="images per assumed sample "
                      "(default 1)")
    plan.add_argument("--image-size", metavar="WxH", help="the image size a dynamic-resolution model (Qwen2.5-VL) is "
                      "assumed to see, turned into its image tokens by its own resize rule (default 640x480: COCO's, "
                      "most of LLaVA-1.5's images)")
    plan.add_argument("--json", metavar="OUT", help="also write the plan as JSON")
    plan.set_defaults(handler=_plan)

    study = commands.add_parser("study", help="a recipe's plans over paired Student seeds, direct KD from every "
                                "Teacher size, equal budgets: summary.json, tables and plots; resumable")
    study.add_argument("recipe", help="cascade recipe YAML (see configs/cascade/study.yaml)")
    study.add_argument("--seeds", type=int, default=5, help="Student seeds 0..N-1 (each retrains the Student)")
    study.add_argument("--teacher-sets", type=int, default=1, metavar="N",
                       help="also retrain the smallest Teacher with seeds 1..N-1 and distil from each")
    study.add_argument("--workers", type=int, default=2, help="cascades run side by side (threads split evenly)")
    study.add_argument("--out", help="study folder (default: the recipe's output)")
    study.add_argument("--no-layouts", action="store_true",
                       help="leave out bottom-up's extra layouts (the paper's per-Teacher budget, the continued "
                       "schedule); their finished stages stay in the store")
    study.add_argument("--sub-chains", action="store_true",
                       help="also bottom-up through every other choice of the smaller Teachers ending at the largest "
                       "(the candidates of `plan --suggest-chain`), each within the same Student budget")
    study.add_argument("--plans", metavar="P,...", help="run only these of the recipe's plans over the whole chain")
    study.set_defaults(handler=_study)

    cache = commands.add_parser("cache-teacher",
                                help="run a Teacher over a dataset and store its top-k signals for distill stages")
    cache.add_argument("--teacher", required=True, metavar="MODEL", help="Teacher checkpoint folder or hub id")
    cache.add_argument("--data", required=True, metavar="JSON", help="LLaVA conversation file (.json or .jsonl)")
    cache.add_argument("--images", metavar="DIR", help="image folder")
    cache.add_argument("--out", required=True, metavar="DIR", help="output folder")
    cache.add_argument("--top-k", type=int, required=True, metavar="K", help="tokens kept per response position")
    cache.add_argument("--max-length", type=int, default=2048, metavar="N",
                       help="as the distill stage's data.max_length")
    cache.add_argument("--batch-size", type=int, default=8)
    cache.add_argument("--samples-per-shard", type=int, default=4096, metavar="N",
                       help="samples per file; several processes (torchrun) share the files out")
    cache.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32",
                       help="Teacher dtype (bf16 on GPUs; never on CPUs without bf16 units)")
    cache.set_defaults(handler=_cache_teacher)

    score = commands.add_parser("score", help="score a LLaVA answer file with a benchmark's official rules")
    score.add_argument("benchmark", help="pope, mme, scienceqa, gqa, textvqa, vizwiz, vqav2, mmbench, ...")
    score.add_argument("--data", required=True, help="the benchmark's folder (questions, ground truth)")
    score.add_argument("--answers", required=True, help="answer file, one JSON line per question")
    score.add_argument("--json", metavar="OUT", help="also write the result as JSON")
    score.set_defaults(handler=_score)

    evaluate = commands.add_parser("eval", help="answer a benchmark with a model (greedy, batched) and score it")
    evaluate.add_argument("--model", required=True, help="model folder or hub id")
    evaluate.add_argument("--benchmark", required=True, help="benchmark name (see `score`)")
    evaluate.add_argument("--data", required=True, help="the benchmark's folder")
    evaluate.add_argument("--out", help="output folder (default MODEL/eval/BENCHMARK)")
    evaluate.add_argument("--batch-size", type=int, default=16, help="questions answered at once (at least 1)")
    evaluate.add_argument("--restart", action="store_true",
                          help="delete the answers already in the output folder and answer anew (needed when "
                               "they came from another model, benchmark or data)")
    evaluate.add_argument("--vision-check", action="store_true",
                          help="also answer with every image blank and with the images shuffled across questions, "
                               "and warn when the real images score within 5 points of either")
    evaluate.set_defaults(handler=_eval)

    convert = commands.add_parser("convert", help="write the submission file of a server-scored benchmark")
    convert.add_argument("benchmark", help="vqav2, vizwiz, gqa, mmbench or mmbench-cn")
    convert.add_argument("--data", required=True, help="the benchmark's folder")
    convert.add_argument("--answers", required=True, help="answer file, one JSON line per question")
    convert.add_argument("--out", required=True, help="submission file (.json; .tsv for MMBench)")
    convert.set_defaults(handler=_convert)

    option_list = commands.add_parser("options", help="every field of a stage file or a recipe file: type, default "
                                      "and help (docs/options.md is this, as markdown)")
    option_list.add_argument("file", choices=("stage", "recipe"))
    option_list.add_argument("--markdown", action="store_true", help="as a markdown table")
    option_list.set_defaults(handler=_options)

    return parser


def user_errors(debug: bool = False) -> tuple[type[BaseException], ...]:
    """The exceptions that mean a file or setting the user gave cannot be used (not a bug of this program);
    none under --debug, so that they end with their traceback."""
    if debug:
        return ()
    from llava_ckd.errors import UserError

    return UserError, FileNotFoundError


def error_line(err: BaseException) -> str:
    if isinstance(err, OSError) and err.strerror and err.filename:  # as raised by open(): "[Errno 2] ..."
        return f"error: {err.strerror}: {err.filename}"
    return f"error: {err}"


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        args.handler(args)
    except KeyboardInterrupt:
        sys.exit(130)
    except user_errors(args.debug) as err:  # evaluated only when an exception gets here: imports stay lazy
        sys.exit(error_line(err))


if __name__ == "__main__":
    main()
