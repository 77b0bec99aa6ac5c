"""What a run trains on, decided from its trainer config and the machine (``plan_hardware``): every
case without a GPU, since the machine's facts are arguments."""

import dataclasses

import pytest

from lmlab.config import ConfigError, build_config, compose
from lmlab.train.hardware import Plan, plan_hardware


def trainer(*overrides):
    return build_config(compose(list(overrides))).trainer


@pytest.mark.parametrize("overrides, gpus, bf16, plan, line", [
    # the default trainer (auto) on a CPU-only machine: what trainer=cpu always did
    ((), 0, False, Plan("cpu", 1, 1, "32-true", "auto"), "training on the CPU, 32-true"),
    # one GPU with bf16 (Ampere or later), and one without (16-mixed, Lightning adds the scaler)
    ((), 1, True, Plan("gpu", 1, 1, "bf16-mixed", "auto"), "training on 1× NVIDIA H100, bf16-mixed"),
    ((), 1, False, Plan("gpu", 1, 1, "16-mixed", "auto"), "training on 1× NVIDIA H100, 16-mixed"),
    # the README's command on a 4-GPU node: DDP on the four
    (("model=large", "trainer.devices=4"), 4, True, Plan("gpu", 4, 1, "bf16-mixed", "auto"),
     "training on 4× NVIDIA H100, bf16-mixed, DDP"),
    (("trainer=ddp",), 8, True, Plan("gpu", 8, 1, "bf16-mixed", "ddp"), "training on 8× NVIDIA H100, bf16-mixed, DDP"),
    (("trainer=fsdp", "trainer.num_nodes=2"), 4, True, Plan("gpu", 4, 2, "bf16-mixed", "fsdp"),
     "training on 4× NVIDIA H100 on each of 2 nodes, bf16-mixed, FSDP"),
    # explicit choices win over the machine
    (("trainer=cpu",), 4, True, Plan("cpu", 1, 1, "32-true", "auto"), "training on the CPU, 32-true"),
    (("trainer.precision=32-true",), 1, True, Plan("gpu", 1, 1, "32-true", "auto"), "training on 1× NVIDIA H100, 32-true"),
    (("trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp"), 0, False,
     Plan("cpu", 2, 1, "32-true", "ddp"), "training on 2 CPU processes, 32-true, DDP (gloo)"),
])
def test_the_plan_for_each_machine(overrides, gpus, bf16, plan, line):
    got = plan_hardware(trainer(*overrides), gpus, bf16)
    assert got == plan
    assert got.describe("NVIDIA H100") == line


@pytest.mark.parametrize("overrides, gpus, bf16, message", [
    (("trainer.devices=4",), 2, True,
     "trainer.devices=4 but this machine has 2 CUDA GPUs: set trainer.devices=2 or fewer (-1 takes them all)"),
    (("model=large", "trainer.devices=4"), 0, False,
     "trainer.devices=4 but this machine has no CUDA GPU: for 4 CPU processes (DDP over gloo) set trainer.accelerator=cpu"),
    (("trainer=gpu",), 0, False, "trainer.accelerator=gpu but this machine has no CUDA GPU: use trainer=cpu"),
    (("trainer=gpu",), 1, False,
     "trainer.precision=bf16-mixed but this GPU has no bf16: use trainer.precision=16-mixed (or 32-true)"),
])
def test_too_few_devices_or_no_bf16_is_one_line(overrides, gpus, bf16, message):
    with pytest.raises(ConfigError) as err:
        plan_hardware(trainer(*overrides), gpus, bf16)
    assert str(err.value) == message


def test_every_gpu_and_the_default_trainer_is_auto():
    tc = trainer()
    assert (tc.accelerator, tc.precision) == ("auto", "auto")
    assert plan_hardware(dataclasses.replace(tc, devices=-1), 8, True).devices == 8
