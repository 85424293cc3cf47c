"""Where a model's weights live under each training engine, and how the distillation losses reach them.

Single process and DDP: every process holds whole models. DeepSpeed ZeRO-3 and FSDP shard weights across
processes and gather them only inside a module's forward. So:
  - the Student's whole loss (trunk, fused LM heads, Teacher) runs *inside* the forward of the engine's
    wrapper (`run_inside`): DDP then all-reduces its gradients, FSDP has its root weights gathered, and
    ZeRO-3 gathers the LM head when the fused heads read it (DeepSpeed gathers a partitioned weight read
    during a forward, and registers it with that forward);
  - an online Teacher is replicated in eval mode under DDP and ZeRO-2 (it has no gradients or optimizer
    states to shard), and sharded under ZeRO-3 (a DeepSpeed engine without optimizer) and FSDP2 (every
    decoder/encoder layer sharded; embeddings and LM head stay whole on each process);
  - a weight read outside any forward (a Teacher's LM head under ZeRO-3) is gathered for the block that
    reads it (`full_weight`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import TypeVar

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import DistributedType, extract_model_from_parallel
from torch import Tensor, nn

from llava_ckd.errors import UserError

Result = TypeVar("Result")

DISTRIBUTED_TIMEOUT = timedelta(hours=2)
"""How long processes wait for each other: the main process checks a whole data file while the others wait for its
sample cache. LLaVA-665K at SigLIP-384's 729 image tokens takes about 9 minutes on one CPU core
(benchmarks/data_path.py: 0.81 ms per record), and a distill stage checks it again for the Teacher."""


def processes() -> PartialState:
    """This run's processes: one, or those torchrun / `accelerate launch` started (over gloo when on CPUs)."""
    return PartialState(cpu=not torch.cuda.is_available(), timeout=DISTRIBUTED_TIMEOUT)


def run_inside(model: nn.Module, compute: Callable[[], Result]) -> Result:
    """`compute()` run as the forward of the model inside `model` (plain, or an engine's wrapper).

    The wrapper's own forward logic (DDP's gradient-sync set-up, FSDP's and DeepSpeed's parameter gathering)
    runs around it, as it would around the model's forward.
    """
    inner = extract_model_from_parallel(model)
    original_forward = inner.forward

    def redirected(*args, **kwargs):
        inner.forward = original_forward
        return compute()

    inner.forward = redirected
    try:
        return model()
    finally:
        inner.forward = original_forward


def is_zero3_partitioned(weight: Tensor) -> bool:
    return hasattr(weight, "ds_id")


@contextmanager
def full_weight(weight: Tensor) -> Iterator[Tensor]:
    """`weight` whole for the block; gathered (read-only) when ZeRO-3 holds only a shard of it."""
    if not is_zero3_partitioned(weight):
        yield weight
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters([weight]):
        yield weight


def prepare_teacher(teacher: nn.Module, accelerator: Accelerator) -> nn.Module:
    """The frozen Teacher placed for the engine `accelerator` runs: replicated, or sharded like the Student."""
    teacher = teacher.eval().requires_grad_(False)
    if accelerator.distributed_type == DistributedType.DEEPSPEED and accelerator.state.deepspeed_plugin.zero_stage == 3:
        return zero3_inference(teacher, accelerator.state.deepspeed_plugin.deepspeed_config)
    if accelerator.distributed_type == DistributedType.FSDP:
        return _fsdp2_shard_layers(teacher, accelerator)
    return teacher.to(accelerator.device)


def zero3_inference(teacher: nn.Module, training_config: dict) -> nn.Module:
    """The Teacher partitioned by a ZeRO-3 DeepSpeed engine without optimizer (the training run's DeepSpeed
    config less its optimizer and scheduler); returns the partitioned module, gathered layer by layer in forward."""
    import deepspeed

    config = copy.deepcopy(training_config)
    for training_only in ("optimizer", "scheduler"):
        config.pop(training_only, None)
    hidden = teacher.config.get_text_config().hidden_size
    config["zero_optimization"] = config.get("zero_optimization", {}) | {
        "stage": 3,
        "stage3_param_persistence_threshold": 10 * hidden,
        "stage3_prefetch_bucket_size": int(0.9 * hidden * hidden),
    }
    engine, *_ = deepspeed.initialize(model=teacher, config=config)
    return engine.module.eval()


def _fsdp2_shard_layers(teacher: nn.Module, accelerator: Accelerator) -> nn.Module:
    plugin = accelerator.state.fsdp_plugin
    if plugin.fsdp_version != 2:
        raise UserError("an online Teacher under FSDP needs fsdp_version: 2 (configs/accelerate/fsdp.yaml)")
    layer_classes = set(plugin.transformer_cls_names_to_wrap or teacher._no_split_modules or ())
    return shard_layers(teacher.to(accelerator.device), layer_classes)


def shard_layers(model: nn.Module, layer_classes: set[str]) -> nn.Module:
    """Each layer of `layer_classes` sharded by FSDP2 over all processes (gathered one at a time in the
    forward); the rest (embeddings, projector, LM head) stays whole on every process."""
    from torch.distributed.fsdp import fully_shard

    layers = [module for module in model.modules() if type(module).__name__ in layer_classes]
    if not layers:
        raise UserError(f"found no layer of {sorted(layer_classes)} to shard in {type(model).__name__}; "
                         "set fsdp_transformer_layer_cls_to_wrap")
    for layer in reversed(layers):  # inner units before the units that contain them
        fully_shard(layer, reshard_after_forward=True)
    return model
