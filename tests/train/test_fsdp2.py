"""FSDP2 on CPU (gloo, 2 processes): a distill step with a sharded Student and a layer-sharded online Teacher
gives the loss and gradients of the unsharded step. Accelerate selects FSDP on GPUs only, so this drives
torch's `fully_shard` directly, as accelerate's FSDP2 plugin would (see fsdp2_distill.py)."""

import pytest

from tests.train.sharded_step import assert_equals_the_unsharded_step, run_two_processes


@pytest.mark.slow
def test_fsdp2_sharded_distill_step_equals_the_unsharded_step(colour_dataset, tokenizer_dir, tmp_path):
    measured = run_two_processes("tests.train.fsdp2_distill", colour_dataset, tokenizer_dir, tmp_path)
    assert measured["teacher_layers_sharded"] and measured["teacher_head_whole"]
    assert_equals_the_unsharded_step(measured)
