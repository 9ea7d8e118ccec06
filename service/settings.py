"""All server settings in one pydantic model; env prefix CONVSERVE_, CLI flags mirror it."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Server configuration. Every field is `CONVSERVE_<FIELD>` in the environment."""

    model_config = SettingsConfigDict(env_prefix="CONVSERVE_", extra="ignore")

    # where and what to serve
    model_dir: Path = Path("models")
    default_model: str = "digits"
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535, description="0 lets the kernel pick a free port")
    grpc_port: int = Field(
        8001,
        ge=0,
        le=65535,
        description="Open Inference Protocol over gRPC and grpc.health.v1 (8001 as Triton); 0: off",
    )
    workers: int = Field(
        0,
        ge=0,
        description="uvicorn worker processes; 0 (auto): one per CPU this server may use, at "
        "most 4, on the CPU; 1 on a GPU or with model_control=explicit (service/worker_count.py)",
    )
    model_control: Literal["none", "poll", "explicit"] = Field(
        "none",
        description="none: serve what is in model_dir at start; poll: follow model_dir every "
        "model_poll_s (new versions load, removed ones unload); explicit: load and unload "
        "through POST /v2/repository/models/{name}/load|unload (needs workers=1)",
    )
    model_poll_s: float = Field(1.0, gt=0, description="seconds between model_dir scans (poll)")

    # onnxruntime. On the CPU, intra_op_threads, intra_op_spinning, inference_threads and
    # max_batch_size are measured per model at warm-up (service/autotune.py, <= 5 s per
    # model; GET /models/{name} shows the choice) unless set: a value given in the
    # environment or as a flag is kept as it is, even when it equals the default.
    providers: Literal["auto", "cpu", "cuda"] = "auto"
    intra_op_threads: int = Field(
        0, ge=0, description="tuned unless set; set: 0 lets onnxruntime choose"
    )
    intra_op_spinning: bool = Field(
        False,
        description="tuned unless set: let onnxruntime's idle intra-op threads spin "
        "(off leaves the CPU to decoding)",
    )
    inference_threads: int = Field(
        1,
        ge=1,
        description="tuned unless set: batches that may run at once (one thread each, "
        "with as many intra-op threads as chosen)",
    )
    cuda_device_id: int = Field(0, ge=0)
    cudnn_conv_algo_search: Literal["EXHAUSTIVE", "HEURISTIC", "DEFAULT"] = "EXHAUSTIVE"
    cuda_use_tf32: bool = Field(
        False,
        description="TF32 tensor-core convolutions on Ampere and later: faster, but they round "
        "inputs to 10-bit mantissas; off keeps answers within 1e-4 of the CPU",
    )
    cuda_mem_limit_mb: int = Field(
        0, ge=0, description="cap on each model version's CUDA memory arena; 0: no cap"
    )
    cuda_arena_extend_strategy: Literal["kNextPowerOfTwo", "kSameAsRequested"] = "kNextPowerOfTwo"
    cuda_prefer_nhwc: bool = Field(False, description="let the CUDA provider use NHWC kernels")
    pad_batches: Literal["auto", "on", "off"] = Field(
        "auto",
        description="pad every batch with zero rows to the next of 1, 2, 4, ... max_batch_size "
        "(all warmed up before ready), so cuDNN never searches algorithms for a new batch "
        "size under traffic; auto: on when the model runs on CUDA",
    )

    # dynamic batching
    max_batch_size: int = Field(
        32, ge=1, description="unset: the tuner picks a batch size up to 32; set: used as is"
    )
    max_batch_delay_ms: float = Field(2.0, ge=0)
    max_queue: int = Field(1024, ge=1, description="images waiting per model before 503")
    request_timeout_s: float = Field(30.0, gt=0)
    decode_threads: int = Field(
        0, ge=0, description="0: one per CPU this process may use, plus one, at most 8"
    )
    inline_decode_max_pixels: int = Field(
        4096,
        ge=0,
        description="a single small upload (<= 16 KiB, at most this many pixels) is decoded "
        "on the event loop, cheaper than a thread hop (so is one of up to 1 MiB / 1 MP for a "
        "model timed under 1 ms, alone or in a worker with one CPU, or for any model alone "
        "whose run gets every CPU); 0 sends every image to the pool",
    )

    # input limits
    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1)
    max_images_per_request: int = Field(64, ge=1)
    max_image_pixels: int = Field(
        0,
        ge=0,
        description="pixels per image, from its header (413); 0: derived from each model's "
        "input, 256x its pixels within 4 Mi..40 M (service/image_limits.py)",
    )
    explain_max_variants: int = Field(
        1024, ge=1, description="occluded copies one /explain request may run (window, stride)"
    )

    # connections: bounds against slow and oversized requests (service/connection.py)
    max_header_bytes: int = Field(
        16 * 1024, ge=1024, description="request line + headers per request (431 beyond)"
    )
    header_timeout_s: float = Field(
        10.0, gt=0, description="a request's headers must arrive within this (408, closed)"
    )
    body_timeout_s: float = Field(
        60.0, gt=0, description="a request's body must arrive within this after its headers"
    )
    max_connections: int = Field(
        256, ge=1, description="open connections per worker; requests beyond get 503"
    )
    max_inflight_body_bytes: int = Field(
        128 * 1024 * 1024,
        ge=0,
        description="request bodies held by all requests in flight together, per worker "
        "(503 beyond): what bounds their memory; 0: no budget",
    )

    # security and operations
    api_key: SecretStr | None = Field(
        None, description="unset: no key (logged at start); empty or padded: refused"
    )
    drain_timeout_s: float = Field(20.0, ge=0)
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    tracing: Literal["auto", "on", "off"] = Field(
        "auto",
        description="OpenTelemetry traces (the otel extra); auto: on when "
        "OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set. "
        "Exporter, sampler and resource come from the OTEL_* variables (docs/operations.md)",
    )

    @field_validator("api_key")
    @classmethod
    def _usable_key(cls, key: SecretStr | None) -> SecretStr | None:
        """An empty key (`CONVSERVE_API_KEY=` from an unset variable) would look like auth
        and be none; spaces or control characters can never arrive in a header."""
        if key is None:
            return None
        value = key.get_secret_value()
        if not value:
            raise ValueError("the API key is empty: unset it to run without a key")
        if value != value.strip(" \t") or any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise ValueError("the API key has leading/trailing spaces or control characters")
        return key

    @model_validator(mode="after")
    def _explicit_needs_one_worker(self) -> Settings:
        # A repository request reaches one worker process; the others would keep serving
        # the old set with no way to tell the client. Poll mode converges by itself.
        if self.model_control == "explicit" and self.workers > 1:
            raise ValueError(
                "model_control=explicit needs workers=1: a load or unload request reaches "
                "only the worker process that answers it; use model_control=poll with "
                "several workers (each follows model_dir), or scale with more replicas"
            )
        return self
