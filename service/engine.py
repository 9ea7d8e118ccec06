"""onnxruntime, and nothing else: session creation, provider choice, running a batch.

Provider choice is decided from what the *created* session reports
(`session.get_providers()`), never from `get_available_providers()`:
onnxruntime-gpu lists CUDAExecutionProvider on machines without a GPU and a
session that asked for CUDA silently falls back to CPU. So `cuda` that did not
get CUDA refuses to start, and `auto` logs what it really got.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import onnxruntime as ort

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


def _requested(options: EngineOptions) -> list[str | tuple[str, dict[str, str]]]:
    cuda = (
        CUDA,
        {
            "device_id": str(options.cuda_device_id),
            "cudnn_conv_algo_search": options.cudnn_conv_algo_search,
        },
    )
    if options.providers == "cpu":
        return [CPU]
    if options.providers == "cuda" or CUDA in ort.get_available_providers():
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

    def _create(self, options: EngineOptions, providers: list) -> ort.InferenceSession:
        try:
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

    def run(self, batch: np.ndarray, outputs: list[str]) -> dict[str, np.ndarray]:
        """One onnxruntime call on an N x H x W x C float32 batch."""
        values = self.session.run(outputs, {self.input_name: batch})
        return dict(zip(outputs, values, strict=True))
