"""Start-up: bundles on disk -> sessions, batchers, a Registry; then warm-up.

Everything that can make the server refuse to start (a broken bundle, a
default model that is not there, `providers=cuda` without CUDA) happens here,
before the server reports ready, with one clear message.
"""

from __future__ import annotations

import asyncio
import io
import logging
from contextlib import suppress
from dataclasses import fields

import numpy as np
from PIL import Image

from service import tracing
from service.batcher import Batcher
from service.bundle import BundleError
from service.engine import Engine, EngineOptions, batch_buckets
from service.execution import cpu_share, fixed_from
from service.inference_thread import InferenceThread
from service.memory import freeze_startup_objects
from service.metrics import Metrics
from service.models import Registry, ServedModel
from service.peer_workers import PEER_WAIT_S, mark_warmed, tuning_alone, wait_for_peers
from service.preprocess import ImageError, preprocess
from service.repository import BundleRef, discover
from service.server_state import ServerState
from service.settings import Settings

log = logging.getLogger("convserve.loader")


class StartupError(RuntimeError):
    """The configured models cannot be served; the message says why."""


def _engine_options(settings: Settings) -> EngineOptions:
    """EngineOptions from the settings fields of the same names (the engine never sees Settings).

    Plus what the tuner needs: which knobs were set explicitly, this worker's
    share of the CPUs (each of `workers` processes tunes its batches for its own)
    and all of them (for a request that is alone).
    """
    same = {f.name: getattr(settings, f.name) for f in fields(EngineOptions)
            if f.name in Settings.model_fields}  # fmt: skip
    cpus = cpu_share(settings.workers)  # affinity and container CPU limit
    # a lone request may have every CPU: the other workers are idle when nothing else runs
    return EngineOptions(
        **same, autotune=fixed_from(settings), autotune_cpus=cpus, autotune_solo_cpus=cpu_share(1)
    )


def load_model(
    ref: BundleRef, settings: Settings, *, metrics: Metrics, worker: InferenceThread
) -> ServedModel:
    """One bundle version: its onnxruntime session and its batcher (EngineError, StartupError)."""
    engine = Engine(ref.path / "model.onnx", _engine_options(settings))
    missing = {"probabilities", *(f.name for f in ref.bundle.feature_maps)} - set(
        engine.output_names
    )
    if missing:
        raise StartupError(f"{ref.path}: model.onnx lacks outputs {sorted(missing)}")
    batcher = Batcher(
        engine.run,
        worker,
        max_batch_size=settings.max_batch_size,
        max_delay_s=settings.max_batch_delay_ms / 1000.0,
        max_queue=settings.max_queue,
        max_concurrent=settings.inference_threads,
        observer=metrics.observer(ref.name, ref.version),
        pad_to=engine.padded_size,
        tracer=tracing.batch_tracer(ref.name, ref.version, engine.provider),
    )
    metrics.watch_model(
        ref.name,
        ref.version,
        engine.provider,
        requested=settings.providers,
        max_queue=settings.max_queue,
    )
    log.info(
        "loaded %s version %s from %s on %s%s",
        ref.name,
        ref.version,
        ref.path,
        engine.provider,
        f", batches padded to {engine.padded_sizes}" if engine.padded_sizes else "",
    )
    return ServedModel(ref.name, ref.version, ref.path, ref.bundle, engine, batcher)


def build_registry(settings: Settings, *, metrics: Metrics, worker: InferenceThread) -> Registry:
    """Every bundle under model_dir, loaded; StartupError when one cannot be served."""
    try:
        found = discover(settings.model_dir)
    except BundleError as exc:
        raise StartupError(str(exc)) from exc
    if settings.default_model not in found:
        raise StartupError(
            f"default model {settings.default_model!r} is not under {settings.model_dir.resolve()} "
            f"(found: {', '.join(found)}); set CONVSERVE_DEFAULT_MODEL or --default-model"
        )
    models: dict[str, dict[str, ServedModel]] = {}
    for name, refs in found.items():
        for ref in refs:
            models.setdefault(name, {})[ref.version] = load_model(
                ref, settings, metrics=metrics, worker=worker
            )
    return Registry(models, settings.default_model)


def _sample_files() -> list[bytes]:
    """A PNG and a JPEG, so the decoder plugins are loaded before the first request."""
    files = []
    for fmt, mode in (("PNG", "L"), ("JPEG", "RGB")):
        buf = io.BytesIO()
        Image.new(mode, (40, 30), 128).save(buf, format=fmt)
        files.append(buf.getvalue())
    return files


def warm_model(model: ServedModel, max_batch_size: int, samples: list[bytes] | None = None) -> None:
    """Tune the execution shape (service/autotune.py), then one batch per batch-size
    bucket through `model`, all outputs (blocking)."""
    with tuning_alone():  # the other workers neither tune nor warm up meanwhile
        _warm(model, max_batch_size, samples)


def _warm(model: ServedModel, max_batch_size: int, samples: list[bytes] | None) -> None:
    bundle = model.bundle
    with suppress(ImageError):  # loads every Pillow plugin, as identifying junk does
        preprocess(b"not an image", bundle.input, bundle.preprocessing, max_pixels=1)
    for data in samples if samples is not None else _sample_files():
        preprocess(data, bundle.input, bundle.preprocessing, max_pixels=10**6)
    execution = model.engine.tune(max_batch_size, f"{model.name}/{model.version}")
    if execution is not None:
        chosen = execution["chosen"]
        model.batcher.reshape(chosen["max_batch_size"], chosen["inference_threads"])
    for size in batch_buckets(max_batch_size):
        batch = np.zeros((size, *model.input_shape), dtype=np.float32)
        model.engine.run(batch, model.engine.output_names)
    log.info("warmed up %s version %s", model.name, model.version)


def warm_up(registry: Registry, max_batch_size: int) -> None:
    """Every served model warmed up (blocking); then what start-up built is frozen."""
    samples = _sample_files()
    for model in registry.all():
        warm_model(model, max_batch_size, samples)
    log.debug("%d start-up objects frozen", freeze_startup_objects())


async def warm_then_ready(registry: Registry, state: ServerState, settings: Settings) -> None:
    """Warm every model up off the loop, then turn ready once every worker has (a probe
    lands on any worker: service/peer_workers.py); a failed warm-up stays unready."""
    try:
        await asyncio.to_thread(warm_up, registry, settings.max_batch_size)
    except Exception as exc:  # e.g. out of GPU memory for the largest bucket
        state.to_failed(f"warm-up failed: {type(exc).__name__}: {exc}")
        log.exception("%s; staying unready", state.reason)
        return
    mark_warmed()
    await wait_for_peers(settings.workers, PEER_WAIT_S)
    state.to_ready()
    if state.ready:
        models = ", ".join(f"{m.name}/{m.version} on {m.provider}" for m in registry.all())
        log.info("ready: %s", models)
