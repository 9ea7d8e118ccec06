"""The one path below every protocol: models, lifecycle, admission, deadlines, inference.

Like Seldon MLServer's `DataPlane`: one object, created with the app and
started in its lifespan, stored as `app.state.dataplane` and handed to every
front door (`/predict` and its raw-body fast path, `/featuremaps`, `/v2`,
`/models`, the probes, and the V1/gRPC adapters). Adapters parse their wire
format, call these operations and render the answer; every failure raised here
is an `APIError` subclass (service/errors.py) that each protocol renders its
own way. Knows no HTTP.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import numpy as np

from service import batcher as scheduler
from service import serial_lane, thread_policy, tracing
from service.bundle import PROBABILITIES_OUTPUT, FeatureMapSpec
from service.classification import Classification
from service.decoder import Decoder
from service.errors import (
    InferenceFailed,
    InvalidParameter,
    InvalidShape,
    NoFilters,
    Overloaded,
    Timeout,
    UnknownLayer,
)
from service.execution import cpu_share
from service.image_limits import MAX_DEFAULT_DECODE_THREADS
from service.inference_thread import InferenceThread
from service.lifecycle import ModelControl
from service.lifecycle.setup import open_repository
from service.loader import StartupError, warm_then_ready
from service.lone_upload import run_alone
from service.metrics import Metrics
from service.models import Registry, ServedModel
from service.peer_workers import track_peers
from service.server_state import ServerState
from service.settings import Settings
from service.visualize import filters_png

log = logging.getLogger("convserve.dataplane")
T = TypeVar("T")
Inputs = np.ndarray | Sequence[bytes]  # a preprocessed N x H x W x C batch, or encoded images


class DataPlane:
    """Everything between a parsed request and onnxruntime, once for every protocol."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.state = ServerState(on_ready=lambda ready: metrics.ready.set(int(ready)))
        self._registry: Registry | None = None
        self.control: ModelControl | None = None  # the model lifecycle (service/lifecycle)
        self._worker: InferenceThread | None = None
        self._decoder: Decoder | None = None
        self._tasks: set[asyncio.Task] = set()
        self._filter_pngs: weakref.WeakKeyDictionary[ServedModel, dict[str, bytes]] = (
            weakref.WeakKeyDictionary()
        )

    # ---- lifecycle --------------------------------------------------------
    async def start(self) -> None:
        """Load every bundle and create its session (StartupError); warm up in the background."""
        settings = self.settings
        thread_policy.side()  # this loop, and what it starts, lets inference run first
        if (peers := track_peers(settings.workers)) is not None:  # before the tuner runs
            self.state.on_busy = peers.set_busy
        self._worker = InferenceThread(count=settings.inference_threads)
        # each of `workers` processes decodes on its share of the CPUs (+1, see Decoder)
        share = cpu_share(settings.workers)
        self._one_cpu = share == 1  # fast models' uploads decode on the loop (lone_upload)
        self._decoder = Decoder(
            settings.decode_threads or min(share + 1, MAX_DEFAULT_DECODE_THREADS),
            max_pixels=settings.max_image_pixels,
            inline_max_pixels=settings.inline_decode_max_pixels,
            timeout_s=settings.request_timeout_s,
        )
        try:
            self._registry, self.control = open_repository(
                settings, metrics=self.metrics, worker=self._worker
            )
        except Exception as exc:
            log.error("refusing to start: %s", exc)
            self._close_threads(wait=False)
            raise StartupError(str(exc)) from None
        self.spawn(warm_then_ready(self.registry, self.state, self.settings))
        self.control.start()  # poll mode: follow model_dir from now on

    def spawn(self, coro) -> asyncio.Task:
        """A background task the data plane keeps a reference to until it ends."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def drain(self, timeout_s: float) -> None:
        """Readiness off and new work refused; wait (up to `timeout_s`) for in-flight requests."""
        self.state.to_draining()
        until = time.monotonic() + timeout_s
        while self.state.in_flight > 0 and time.monotonic() < until:
            await asyncio.sleep(0.02)
        await self._drain_batchers()

    async def _drain_batchers(self) -> None:
        if self._registry is not None:
            for model in self._registry.all():
                await model.batcher.drain()

    async def stop(self) -> None:
        """Shutdown: finish what is queued, then stop the threads."""
        self.state.to_draining()
        if self.control is not None:
            await self.control.close()  # no more polls; retired versions drained and freed
        await self._drain_batchers()
        self._close_threads(wait=True)

    def _close_threads(self, wait: bool) -> None:
        if self._worker is not None:
            self._worker.close()
        if self._decoder is not None:
            self._decoder.close(wait=wait)

    # ---- health -----------------------------------------------------------
    def live(self) -> bool:
        return True  # answering at all is liveness: the event loop runs

    def ready(self) -> bool:
        return self.state.ready

    def model_ready(self, name: str, version: str | None = None) -> bool:
        """Whether `name` (and `version`) can serve now; UnknownModel / UnknownVersion."""
        self.model(name, version)
        return self.state.ready

    # ---- models -----------------------------------------------------------
    @property
    def decoder(self) -> Decoder:
        if self._decoder is None:
            raise RuntimeError("the data plane has not started")
        return self._decoder

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            raise RuntimeError("the data plane has not started")
        return self._registry

    def model(self, name: str | None = None, version: str | None = None) -> ServedModel:
        """The served model (the default name, the latest version); UnknownModel/UnknownVersion."""
        return self.registry.resolve(name, version)

    def layer(self, model: ServedModel, name: str) -> FeatureMapSpec:
        """A feature-map layer of `model`; UnknownLayer."""
        spec = model.layers.get(name)
        if spec is None:
            raise UnknownLayer(model.unknown_layer_message(name))
        return spec

    def deadline(self, timeout_s: float | None = None) -> float:
        """The time.monotonic() by which a request starting now must be answered."""
        return time.monotonic() + (
            self.settings.request_timeout_s if timeout_s is None else timeout_s
        )

    # ---- operations -------------------------------------------------------
    async def decode(
        self,
        model: ServedModel,
        blobs: Sequence[bytes],
        names: Sequence[str | None] | None = None,
        *,
        deadline: float | None = None,
    ) -> np.ndarray:
        """Encoded images -> the model's (N, H, W, C) float32 input, as training preprocessed.

        While the pool decodes, the model's batcher knows rows are on their way
        (and may wait for them to fill a batch); a tiny image decoded inline never waits.
        Timeout at `deadline` (None: request_timeout_s from now), even mid-decode.
        """
        span = tracing.OFF
        if tracing.enabled:
            name, version = model.name, model.version
            span = tracing.span("decode", model=name, version=version, images=len(blobs))
        with span:
            batch = self.decoder.inline(model.bundle, blobs)
            if batch is not None:
                return batch
            if deadline is None:
                deadline = self.deadline()
            with model.batcher.expecting():
                return await self.decoder.decode(model.bundle, blobs, names, deadline=deadline)

    def _alone_options(self) -> dict:
        """What the lone-upload path may do now (service/lone_upload.py)."""
        return {
            "in_flight": self.state.in_flight,
            "one_cpu": self._one_cpu,
            "loop_decode": self.settings.inline_decode_max_pixels > 0,
            "timeout_s": self.settings.request_timeout_s,
        }

    async def infer(
        self,
        model: ServedModel,
        inputs: Inputs,
        outputs: Sequence[str] = (PROBABILITIES_OUTPUT,),
        *,
        names: Sequence[str | None] | None = None,
        deadline: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Rows through the model's batcher: output name -> (N, ...) array."""
        if deadline is None:
            deadline = self.deadline()
        if not isinstance(inputs, np.ndarray):
            alone = await run_alone(
                self.decoder, model, inputs, outputs, deadline, **self._alone_options()
            )
            if alone is not None:
                return alone
            if serial_lane.takes(model, inputs, one_cpu=self._one_cpu):
                model.check_outputs(outputs)
                loads = self.decoder.deferred(model.bundle, inputs, names)
                return await self._answer(model.batcher.submit_deferred(loads, outputs, deadline))
            inputs = await self.decode(model, inputs, names, deadline=deadline)
        elif inputs.ndim != 4 or inputs.shape[1:] != model.input_shape:
            raise InvalidShape(
                f"model {model.name} takes N x {' x '.join(map(str, model.input_shape))} "
                f"images, not {' x '.join(map(str, inputs.shape))}"
            )
        elif inputs.dtype != np.float32:
            inputs = inputs.astype(np.float32)
        model.check_outputs(outputs)
        return await self._answer(model.batcher.submit(inputs, outputs, deadline))

    async def _answer(self, work: Awaitable[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """The batcher's answer, its failures as the API's errors."""
        try:
            return await work
        except scheduler.QueueFull as exc:
            raise Overloaded(f"the server is busy: {exc}; retry shortly") from None
        except scheduler.DeadlineExceeded as exc:
            timeout = self.settings.request_timeout_s
            raise Timeout(f"{exc} (request timeout {timeout:g} s)") from None
        except scheduler.BatchFailed as exc:
            raise InferenceFailed(str(exc)) from None

    async def classify(
        self,
        model: ServedModel,
        inputs: Inputs,
        *,
        top_k: int,
        names: Sequence[str | None] | None = None,
        deadline: float | None = None,
    ) -> Classification:
        classes = len(model.bundle.classes)
        if not 1 <= top_k <= classes:
            raise InvalidParameter(f"top_k must be an integer from 1 to {classes}, not {top_k!r}")
        out = await self.infer(
            model, inputs, (PROBABILITIES_OUTPUT,), names=names, deadline=deadline
        )
        return Classification(model, out[PROBABILITIES_OUTPUT], top_k)

    async def feature_map(
        self,
        model: ServedModel,
        layer: str,
        image: bytes | np.ndarray,
        *,
        name: str | None = None,
        deadline: float | None = None,
    ) -> np.ndarray:
        """One image's activations of `layer` (H x W x C); UnknownLayer."""
        self.layer(model, layer)
        inputs = image[np.newaxis] if isinstance(image, np.ndarray) else [image]
        out = await self.infer(model, inputs, (layer,), names=[name], deadline=deadline)
        return out[layer][0]

    async def offload(self, fn: Callable[..., T], *args: object) -> T:
        """CPU-heavy work (PNG encoding, explanations) in the decode pool, off the event loop."""
        return await self.decoder.run(fn, *args)

    async def filters_png(self, model: ServedModel, layer: str) -> bytes:
        """A Conv2D layer's kernels as a PNG grid, drawn once per model version and layer."""
        spec = self.layer(model, layer)
        cache = self._filter_pngs.setdefault(model, {})
        png = cache.get(layer)
        if png is None:
            kernel = model.filters.get(layer)
            if kernel is None:
                raise NoFilters(f"layer {layer!r} ({spec.kind}) has no filters in filters.npz")
            png = cache[layer] = await asyncio.to_thread(filters_png, kernel)
        return png
