"""Whether this machine can run a trainer config, checked before a run reads its data, plans its
resume or writes anything.

Lightning refuses these settings itself, but only when the ``Trainer`` is built: after the old
checkpoints were moved aside and the state file written, and with a traceback. What Lightning
does on this CPU-only machine (tests/test_resume_safety.py checks that ``check_hardware`` and
Lightning agree here):

* ``accelerator=gpu``: ``MisconfigurationException: No supported gpu backend found!``
  (``cuda``: "``CUDAAccelerator`` can not run on your system");
* ``strategy=fsdp`` on the CPU: ``ValueError: The strategy `fsdp` requires a GPU accelerator``;
* ``devices=-1`` on the CPU: ``TypeError: `devices` selected with `CPUAccelerator` should be an int > 0``;
* ``precision=16-mixed`` on the CPU: Lightning only warns, and trains in ``bf16-mixed`` instead,
  so the run would not be what its config says; refused here (``bf16-mixed`` and ``bf16-true``
  run on the CPU).

On a GPU, more devices than there are GPUs is a ``MisconfigurationException``, and bf16 on a GPU
without it fails in ``torch.autocast`` ("Current CUDA Device does not support bfloat16").
"""

from __future__ import annotations

from lmlab.config import ConfigError, TrainerConfig


def runs_on_gpu(tc: TrainerConfig, cuda_devices: int) -> bool:
    """Whether the run's accelerator is CUDA (``auto`` takes it when there is a GPU)."""
    return tc.accelerator in ("gpu", "cuda") or (tc.accelerator == "auto" and cuda_devices > 0)


def check_hardware(tc: TrainerConfig, cuda_devices: int, bf16_supported: bool) -> None:
    """Refuse, with one line naming the key and the fix, a trainer config this machine cannot run:
    ``cuda_devices`` CUDA GPUs, ``bf16_supported`` whether they do bf16. Pure: the facts are
    arguments (``cuda_facts`` reads them), so every case is tested without a GPU."""
    if tc.accelerator in ("gpu", "cuda") and cuda_devices == 0:
        raise ConfigError(f"trainer.accelerator={tc.accelerator} but this machine has no CUDA GPU: use trainer=cpu")
    if runs_on_gpu(tc, cuda_devices):
        if tc.devices > cuda_devices:
            found = f"{cuda_devices} CUDA GPU" + ("s" if cuda_devices > 1 else "")
            raise ConfigError(f"trainer.devices={tc.devices} but this machine has {found}: set "
                              f"trainer.devices={cuda_devices} or fewer (-1 takes them all)")
        if tc.precision.startswith("bf16") and not bf16_supported:
            raise ConfigError(f"trainer.precision={tc.precision} but this GPU has no bf16: use "
                              "trainer.precision=16-mixed (or 32-true)")
        return
    if tc.strategy == "fsdp":
        raise ConfigError("trainer.strategy=fsdp needs CUDA GPUs, and this run is on the CPU: use "
                          "trainer.strategy=ddp there")
    if tc.precision == "16-mixed":
        raise ConfigError("trainer.precision=16-mixed needs a CUDA GPU (on the CPU, Lightning would train "
                          "in bf16-mixed instead): use trainer.precision=bf16-mixed or 32-true")
    if tc.devices == -1:
        raise ConfigError("trainer.devices=-1 (every GPU) but this run is on the CPU: give a number of "
                          "processes, e.g. trainer.devices=2")


def check_machine(tc: TrainerConfig) -> None:
    """``check_hardware`` against this machine (``cuda_facts``)."""
    check_hardware(tc, *cuda_facts(tc))


def cuda_facts(tc: TrainerConfig) -> tuple[int, bool]:
    """(CUDA GPUs on this machine, whether they do bf16) for ``check_hardware``. The bf16 probe
    runs only when the run asks for bf16 on a GPU (else False): on a GPU older than Ampere it
    makes a tensor, and with it a CUDA context, in every DDP rank's process."""
    import torch

    n = torch.cuda.device_count()
    wants_bf16 = tc.precision.startswith("bf16") and runs_on_gpu(tc, n)
    return n, bool(n and wants_bf16 and torch.cuda.is_bf16_supported())
