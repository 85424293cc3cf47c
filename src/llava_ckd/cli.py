"""The `llava-ckd` command: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def _make_data(args: argparse.Namespace) -> None:
    from llava_ckd.data.synthetic import SyntheticSpec, write_benchmark

    write_benchmark(Path(args.out), SyntheticSpec(seed=args.seed, n_train=args.train, n_val=args.val,
                                                   n_test=args.test, n_captions=args.captions))


def _train(args: argparse.Namespace) -> None:
    from llava_ckd.config import load_stage_config
    from llava_ckd.train.stage import run_stage

    run_stage(load_stage_config(Path(args.config), overrides=args.set))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llava-ckd", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    make_data = commands.add_parser("make-data", help="render the synthetic shapes VQA benchmark")
    make_data.add_argument("--out", required=True, help="output folder")
    make_data.add_argument("--seed", type=int, default=0)
    make_data.add_argument("--train", type=int, default=20000, help="training conversations")
    make_data.add_argument("--val", type=int, default=500, help="validation questions")
    make_data.add_argument("--test", type=int, default=1000, help="test questions")
    make_data.add_argument("--captions", type=int, default=5000, help="caption pairs for pretraining")
    make_data.set_defaults(handler=_make_data)

    train = commands.add_parser("train", help="run one training stage (pretrain or sft) from a YAML file")
    train.add_argument("config", help="stage YAML")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config field, e.g. --set max_steps=10 (repeatable)")
    train.set_defaults(handler=_train)

    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        args.handler(args)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
