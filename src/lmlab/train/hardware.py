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

from dataclasses import dataclass

from lmlab.config import ConfigError, TrainerConfig


def runs_on_gpu(tc: TrainerConfig, cuda_devices: int) -> bool:
    """Whether the run's accelerator is CUDA (``auto`` takes it when there is a GPU)."""
    return tc.accelerator in ("gpu", "cuda") or (tc.accelerator == "auto" and cuda_devices > 0)


@dataclass(frozen=True)
class Plan:
    """What a run trains on, resolved from its trainer config and the machine: the arguments
    Lightning's ``Trainer`` gets (``accelerator`` is ``cpu`` or ``gpu``, ``precision`` never
    ``auto``) and a line saying so."""

    accelerator: str
    devices: int
    num_nodes: int
    precision: str
    strategy: str

    def describe(self, gpu_name: str = "") -> str:
        """"training on 4× NVIDIA H100 80GB HBM3, bf16-mixed, DDP" (per node), or on the CPU."""
        world = self.devices * self.num_nodes
        where = (f"{self.devices}× {gpu_name or 'CUDA GPU'}" if self.accelerator == "gpu"
                 else "the CPU" if self.devices == 1 else f"{self.devices} CPU processes")
        nodes = f" on each of {self.num_nodes} nodes" if self.num_nodes > 1 else ""
        strategy = {"auto": "DDP" if world > 1 else "", "ddp": "DDP", "fsdp": "FSDP"}.get(
            self.strategy, self.strategy.upper().replace("_", " "))
        if strategy == "DDP" and self.accelerator == "cpu":
            strategy = "DDP (gloo)"
        return ", ".join(part for part in (f"training on {where}{nodes}", self.precision, strategy) if part)


def plan_hardware(tc: TrainerConfig, cuda_devices: int, bf16_supported: bool) -> Plan:
    """The ``Plan`` of ``tc`` on a machine with ``cuda_devices`` CUDA GPUs that do bf16 or not;
    ``check_hardware``'s refusals first. ``accelerator=auto`` takes the GPUs when there are any,
    else the CPU; ``precision=auto`` is bf16-mixed on GPUs that have it, 16-mixed (with a gradient
    scaler) on those that do not, and 32-true on the CPU; ``devices=-1`` is every GPU. Pure, so
    every case is tested without a GPU."""
    check_hardware(tc, cuda_devices, bf16_supported)
    gpu = runs_on_gpu(tc, cuda_devices)
    precision = tc.precision
    if precision == "auto":
        precision = ("bf16-mixed" if bf16_supported else "16-mixed") if gpu else "32-true"
    devices = cuda_devices if gpu and tc.devices == -1 else tc.devices
    return Plan("gpu" if gpu else "cpu", devices, tc.num_nodes, precision, tc.strategy)


def check_hardware(tc: TrainerConfig, cuda_devices: int, bf16_supported: bool) -> None:
    """Refuse, with one line naming the key and the fix, a trainer config this machine cannot run:
    ``cuda_devices`` CUDA GPUs, ``bf16_supported`` whether they do bf16. Pure: the facts are
    arguments (``cuda_facts`` reads them), so every case is tested without a GPU."""
    if tc.accelerator in ("gpu", "cuda") and cuda_devices == 0:
        raise ConfigError(f"trainer.accelerator={tc.accelerator} but this machine has no CUDA GPU: use trainer=cpu")
    if tc.accelerator == "auto" and cuda_devices == 0 and tc.devices > 1:
        # several devices asked of the machine's choice mean GPUs: processes on the CPU are asked by name
        raise ConfigError(f"trainer.devices={tc.devices} but this machine has no CUDA GPU: for {tc.devices} "
                          "CPU processes (DDP over gloo) set trainer.accelerator=cpu")
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


def check_machine(tc: TrainerConfig) -> Plan:
    """``plan_hardware`` against this machine (``cuda_facts``)."""
    return plan_hardware(tc, *cuda_facts(tc))


def gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""


def cuda_facts(tc: TrainerConfig) -> tuple[int, bool]:
    """(CUDA GPUs on this machine, whether they do bf16) for ``check_hardware``. The bf16 probe
    runs only when the run asks for bf16 on a GPU (else False): on a GPU older than Ampere it
    makes a tensor, and with it a CUDA context, in every DDP rank's process."""
    import torch

    n = torch.cuda.device_count()
    wants_bf16 = (tc.precision.startswith("bf16") or tc.precision == "auto") and runs_on_gpu(tc, n)
    return n, bool(n and wants_bf16 and torch.cuda.is_bf16_supported())
