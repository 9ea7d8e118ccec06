"""onnxruntime, and nothing else: session creation, provider choice, running a batch.

Provider choice is decided from what the *created* session reports
(`session.get_providers()`), never from `get_available_providers()`:
onnxruntime-gpu lists CUDAExecutionProvider on machines without a GPU and a
session that asked for CUDA silently falls back to CPU. So `cuda` that did not
get CUDA refuses to start, and `auto` logs what it really got.

Batch padding: cuDNN picks (with EXHAUSTIVE, by timing every algorithm) and
caches a convolution algorithm per input shape, so every new batch size costs
a search on the first request that has it. With padding on (by default on CUDA
only) `padded_size` rounds every batch up to the next of 1, 2, 4, ...,
max_batch_size, the sizes the loader warms up before the server is ready; the
batcher adds the zero rows.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import onnxruntime as ort

from service import thread_policy
from service.autotune import Fixed
from service.execution import tune_session

log = logging.getLogger("convserve.engine")

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
ProviderChoice = Literal["auto", "cpu", "cuda"]


class EngineError(RuntimeError):
    """The model cannot be served as configured (wrong provider, broken file)."""


@dataclass(frozen=True)
class EngineOptions:
    """The onnxruntime knobs the settings expose."""

    providers: ProviderChoice = "auto"
    intra_op_threads: int = 0
    intra_op_spinning: bool = False
    cuda_device_id: int = 0
    cudnn_conv_algo_search: str = "EXHAUSTIVE"
    cuda_use_tf32: bool = False
    cuda_mem_limit_mb: int = 0
    cuda_arena_extend_strategy: str = "kNextPowerOfTwo"
    cuda_prefer_nhwc: bool = False
    pad_batches: Literal["auto", "on", "off"] = "auto"
    max_batch_size: int = 32
    # service/autotune.py: the knobs set explicitly (the rest are measured); None: no tuning
    autotune: Fixed | None = None
    autotune_cpus: int = 1  # the CPUs this process may use (divided among workers)
    autotune_solo_cpus: int = 0  # the CPUs a lone request may use (0: autotune_cpus)


def batch_buckets(max_batch_size: int) -> list[int]:
    """1, 2, 4, ... up to and including max_batch_size: the warmed-up batch sizes."""
    sizes, n = [], 1
    while n < max_batch_size:
        sizes.append(n)
        n *= 2
    return [*sizes, max_batch_size]


def cuda_provider_options(options: EngineOptions) -> dict[str, str]:
    """The CUDA execution provider's options, as onnxruntime takes them (strings).

    TF32 is off unless asked for: onnxruntime turns it on by default, and its
    10-bit-mantissa convolutions move probabilities by more than the 1e-4 the
    service promises against the CPU.
    """
    opts = {
        "device_id": str(options.cuda_device_id),
        "cudnn_conv_algo_search": options.cudnn_conv_algo_search,
        "use_tf32": "1" if options.cuda_use_tf32 else "0",
        "arena_extend_strategy": options.cuda_arena_extend_strategy,
        "prefer_nhwc": "1" if options.cuda_prefer_nhwc else "0",
        "do_copy_in_default_stream": "1",
    }
    if options.cuda_mem_limit_mb:
        opts["gpu_mem_limit"] = str(options.cuda_mem_limit_mb * 1024 * 1024)
    return opts


def _session_options(options: EngineOptions) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = options.intra_op_threads
    so.inter_op_num_threads = 1
    # Spinning idle pool threads burn the cores the decode pool needs between batches.
    so.add_session_config_entry(
        "session.intra_op.allow_spinning", "1" if options.intra_op_spinning else "0"
    )
    so.log_severity_level = 3  # errors only: the CUDA fallback is reported by us, clearly
    return so


def wants_cuda(providers: str) -> bool:
    """Whether `providers` ("auto", "cpu", "cuda") asks onnxruntime for CUDA on this machine."""
    return providers == "cuda" or (providers == "auto" and CUDA in ort.get_available_providers())


def _requested(options: EngineOptions) -> list[str | tuple[str, dict[str, str]]]:
    cuda = (CUDA, cuda_provider_options(options))
    if options.providers == "cpu":
        return [CPU]
    if wants_cuda(options.providers):
        _preload_cuda_libraries()
        return [cuda, CPU]
    return [CPU]


@functools.cache  # once per process, not once per model version
def _preload_cuda_libraries() -> None:
    """Load CUDA/cuDNN from the nvidia-* pip wheels (onnxruntime-gpu's `cuda`/`cudnn`
    extras, or PyTorch's) so a session finds them without LD_LIBRARY_PATH.

    Best effort: libraries installed system-wide are found by the loader anyway, and
    whether CUDA really works is judged from the created session, not from here.
    """
    preload = getattr(ort, "preload_dlls", None)  # onnxruntime >= 1.21
    if preload is None:
        return
    try:
        preload()
    except Exception as exc:  # a missing wheel is not an error: the session decides
        log.debug("onnxruntime.preload_dlls() failed: %s", exc)


class Engine:
    """One onnxruntime InferenceSession; `run` is called from a single thread."""

    def __init__(self, model_path: Path, options: EngineOptions) -> None:
        self.path = Path(model_path)
        self.options = options
        self.execution: dict | None = None  # what the tuner chose and measured
        requested = _requested(options)
        try:
            self.session = self._create(options, requested)
        except EngineError as exc:
            if options.providers != "auto" or requested == [CPU]:
                raise
            # some onnxruntime-gpu builds raise instead of falling back (missing CUDA libraries)
            log.warning("providers=auto: CUDA session failed (%s); trying the CPU", exc)
            self.session = self._create(options, [CPU])
        active = self.session.get_providers()
        self.provider = active[0] if active else "unknown"
        self._check_provider(options)
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        pad = options.pad_batches == "on" or (
            options.pad_batches == "auto" and self.provider == CUDA
        )
        self.padded_sizes = batch_buckets(options.max_batch_size) if pad else []

    def _create(self, options: EngineOptions, providers: list) -> ort.InferenceSession:
        try:
            with thread_policy.as_inference():  # its intra-op threads are inference threads
                return ort.InferenceSession(
                    str(self.path), sess_options=_session_options(options), providers=providers
                )
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise EngineError(f"{self.path}: onnxruntime cannot load the model: {exc}") from exc

    def _check_provider(self, options: EngineOptions) -> None:
        available = ort.get_available_providers()
        if options.providers == "cuda" and self.provider != CUDA:
            raise EngineError(
                f"providers=cuda but the onnxruntime session for {self.path} got {self.provider}: "
                f"CUDA is not usable here (onnxruntime {ort.__version__}, available providers "
                f"{available}; is onnxruntime-gpu installed with a working CUDA/cuDNN and a GPU "
                f"at device {options.cuda_device_id}?). Refusing to start; use providers=auto or "
                "cpu to run on the CPU."
            )
        if options.providers == "auto":
            if CUDA in available and self.provider != CUDA:
                log.warning(
                    "providers=auto: onnxruntime offers CUDA but the session for %s got %s; "
                    "running on the CPU",
                    self.path,
                    self.provider,
                )
            else:
                log.info("providers=auto: %s runs on %s", self.path, self.provider)

    def tune(self, batch_cap: int, label: str) -> dict | None:
        """Time the model on this machine and switch to the fastest session(s) (CPU only).

        Returns `Choice.as_dict()` (also kept as `self.execution`), None when not tuned.
        """
        fixed = self.options.autotune
        if fixed is None or self.provider != CPU:
            return None

        def make(threads: int, spinning: bool) -> ort.InferenceSession:
            opts = replace(self.options, intra_op_threads=threads, intra_op_spinning=spinning)
            return self._create(opts, [CPU])

        with thread_policy.as_inference():  # the tuner's callers time what inference gets
            self.session, choice = tune_session(
                make, self.session, fixed, cpus=self.options.autotune_cpus, batch_cap=batch_cap,
                solo_cpus=self.options.autotune_solo_cpus,
                output=self.output_names[0], label=label,
            )  # fmt: skip
        self.execution = choice.as_dict()
        return self.execution

    def padded_size(self, rows: int) -> int:
        """The batch size `rows` rows run at: the next padded size, or `rows` itself."""
        return next((size for size in self.padded_sizes if size >= rows), rows)

    def run(self, batch: np.ndarray, outputs: list[str]) -> dict[str, np.ndarray]:
        """One onnxruntime call on an N x H x W x C float32 batch."""
        values = self.session.run(outputs, {self.input_name: batch})
        return dict(zip(outputs, values, strict=True))

    def owns_the_machine(self) -> bool:
        """A lone run now would have every CPU: the tuner chose a solo session and it is free."""
        solo_free = getattr(self.session, "solo_free", None)
        return solo_free is not None and solo_free()

    def run_alone(self, batch: np.ndarray, outputs: list[str]) -> dict[str, np.ndarray]:
        """`run` for a request served alone: on the tuner's solo session, if it chose one."""
        run = getattr(self.session, "run_alone", self.session.run)
        return dict(zip(outputs, run(outputs, {self.input_name: batch}), strict=True))
