"""DeepSpeed ZeRO-3 on CPU (gloo, 2 processes): a distill step with a partitioned Student and a partitioned
online Teacher gives the loss and gradients of the unpartitioned step. DeepSpeed comes with the dev set-up
(`pip install -e .[dev]`; its first start compiles a small CPU communication op, about 35 s); without it
the test is skipped. Accelerate's Trainer path does not set DeepSpeed up on CPUs, so this drives
`deepspeed.initialize` directly (see zero3_distill.py)."""

import pytest

from tests.train.sharded_step import assert_equals_the_unsharded_step, run_two_processes


@pytest.mark.slow
def test_zero3_partitioned_distill_step_equals_the_unpartitioned_step(colour_dataset, tokenizer_dir, tmp_path):
    pytest.importorskip("deepspeed")
    measured = run_two_processes("tests.train.zero3_distill", colour_dataset, tokenizer_dir, tmp_path)
    assert measured["partitioned_outside_forward"]
    assert_equals_the_unsharded_step(measured)
