"""The gRPC front door: KServe's GRPCInferenceService and grpc.health.v1.Health.

GRPCInferenceService also has Triton's model repository extension
(RepositoryIndex, RepositoryModelLoad, RepositoryModelUnload: repository.py).

Runs on the HTTP server's event loop (grpc.aio), started and stopped by the
app's lifespan, over the same data plane as every REST route: one registry,
one batcher per model, one lifecycle state. The API key comes from metadata
(`authorization: Bearer …` or `x-api-key`); the client's deadline (capped at
`request_timeout_s`) is the request's deadline; every APIError maps to a gRPC
status code, never UNKNOWN. Messages up to `max_body_bytes` are accepted.

Every unary call is counted in the same request metrics as HTTP (see `_record`):
route = the gRPC method path, method = that of the same operation over REST
(POST for ModelInfer and the repository calls, GET for the rest), status = the HTTP status the same
error gets over REST, so the alert rules' POST ratios cover gRPC inference.

With `workers > 1` every worker process binds the gRPC port with SO_REUSEPORT
and the kernel spreads connections (not single calls) over them; with one
worker SO_REUSEPORT is off, so a port already in use fails the start loudly.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service import tracing
from service.auth import check_api_key
from service.dataplane import DataPlane
from service.errors import APIError
from service.grpc import codec, repository
from service.grpc import grpc_predict_v2_pb2 as pb
from service.grpc import grpc_predict_v2_pb2_grpc as pb_grpc
from service.loader import StartupError
from service.metrics import Metrics
from service.oip.metadata import model_metadata, server_metadata
from service.oip.protocol import ProtocolError
from service.settings import Settings

log = logging.getLogger("convserve.grpc")
SERVICE = "inference.GRPCInferenceService"
CHECK_ROUTE = "/grpc.health.v1.Health/Check"
Code = grpc.StatusCode
_BY_STATUS = {
    400: Code.INVALID_ARGUMENT,
    401: Code.UNAUTHENTICATED,
    404: Code.NOT_FOUND,
    405: Code.UNIMPLEMENTED,
    409: Code.FAILED_PRECONDITION,
    413: Code.RESOURCE_EXHAUSTED,
    415: Code.INVALID_ARGUMENT,
    422: Code.INVALID_ARGUMENT,
    503: Code.UNAVAILABLE,
    504: Code.DEADLINE_EXCEEDED,
}


# the HTTP method of each call's REST twin: the alert rules count inference as POST
_POSTS = frozenset(
    {"ModelInfer", "RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload"}
)
CLIENT_CLOSED = 499  # the client cancelled the call (nginx's code for the same)


def status_code(http_status: int) -> grpc.StatusCode:
    """The gRPC code of an APIError's HTTP status (INTERNAL for anything else)."""
    return _BY_STATUS.get(http_status, Code.INTERNAL)


def _cancelled_status(context: grpc.aio.ServicerContext) -> int:
    """A call cancelled under us: 504 when it carried a deadline, else 499 (client went away).

    A gRPC client whose deadline passes cancels the call (RST_STREAM), so the
    server sees a cancellation, often before its own clock says the deadline
    passed; a call with a deadline that gets cancelled is almost always that.
    """
    return CLIENT_CLOSED if context.time_remaining() is None else 504


def _record(metrics: Metrics, route: str, method: str, status: int, started: float) -> None:
    """One finished call in the request counter and latency histogram HTTP uses."""
    metrics.request_done(route, method, status, time.perf_counter() - started)


def _rpc(method: Callable[..., Awaitable]) -> Callable[..., Awaitable]:
    """Turn the data plane's and the codec's refusals into gRPC statuses; count the call."""
    route = f"/{SERVICE}/{method.__name__}"
    verb = "POST" if method.__name__ in _POSTS else "GET"

    @functools.wraps(method)
    async def call(self: InferenceServicer, request, context: grpc.aio.ServicerContext):
        started = time.perf_counter()
        trace = None
        if tracing.enabled:
            trace = tracing.start_rpc(context.invocation_metadata(), SERVICE, method.__name__)
        failure = None
        status = 200
        metrics = self._dp.metrics
        metrics.in_flight.inc()
        try:
            return await method(self, request, context)
        except (APIError, ProtocolError) as exc:
            status = exc.status
            failure = (status_code(exc.status), exc.message)
        except asyncio.CancelledError:
            status = _cancelled_status(context)
            raise
        except Exception:
            log.exception("unhandled error in %s", method.__name__)
            status = 500
            failure = (Code.INTERNAL, "internal server error; see the server log")
        finally:
            metrics.in_flight.dec()
            _record(metrics, route, verb, status, started)
            if trace is not None:
                tracing.end_rpc(trace, (failure[0] if failure else Code.OK).value[0])
        await context.abort(*failure)

    return call


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """KServe's six methods and Triton's three repository methods over the data plane."""

    def __init__(self, dataplane: DataPlane) -> None:
        self._dp = dataplane

    def _authorize(self, context: grpc.aio.ServicerContext) -> None:
        metadata = dict(context.invocation_metadata() or ())
        check_api_key(
            self._dp.settings.api_key, metadata.get("x-api-key"), metadata.get("authorization")
        )

    def _deadline(self, context: grpc.aio.ServicerContext) -> float:
        remaining = context.time_remaining()
        limit = self._dp.settings.request_timeout_s
        return time.monotonic() + (limit if remaining is None else min(remaining, limit))

    @_rpc
    async def ServerLive(self, request, context) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self._dp.live())

    @_rpc
    async def ServerReady(self, request, context) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._dp.ready())

    @_rpc
    async def ServerMetadata(self, request, context) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(**server_metadata())

    @_rpc
    async def ModelReady(self, request: pb.ModelReadyRequest, context) -> pb.ModelReadyResponse:
        self._authorize(context)
        return pb.ModelReadyResponse(
            ready=self._dp.model_ready(request.name, request.version or None)
        )

    @_rpc
    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context
    ) -> pb.ModelMetadataResponse:
        self._authorize(context)
        served = self._dp.model(request.name, request.version or None)
        versions = [served.version] if request.version else served.versions
        return codec.metadata_response(model_metadata(served.name, served.bundle, versions))

    @_rpc
    async def ModelInfer(self, request: pb.ModelInferRequest, context) -> pb.ModelInferResponse:
        self._authorize(context)
        dp = self._dp
        with dp.state.admitted():
            deadline = self._deadline(context)
            served = dp.model(request.model_name, request.model_version or None)
            call = codec.parse_infer(request, served.bundle, dp.settings.max_images_per_request)
            inputs = call.tensor if call.tensor is not None else call.images
            names = [wanted.name for wanted in call.outputs]
            results = await dp.infer(served, inputs, names, deadline=deadline)
            return codec.infer_response(
                model_name=served.name,
                model_version=served.version,
                call=call,
                results=results,
                labels=served.bundle.classes,
            )

    # Triton's model repository extension; refused while draining, as REST refuses POSTs
    @_rpc
    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context
    ) -> pb.RepositoryIndexResponse:
        self._authorize(context)
        with self._dp.state.admitted():
            return repository.index(self._dp, request)

    @_rpc
    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context
    ) -> pb.RepositoryModelLoadResponse:
        self._authorize(context)
        with self._dp.state.admitted():
            return await repository.load(self._dp, request)

    @_rpc
    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context
    ) -> pb.RepositoryModelUnloadResponse:
        self._authorize(context)
        with self._dp.state.admitted():
            return await repository.unload(self._dp, request)


class HealthServicer(health_pb2_grpc.HealthServicer):
    """grpc.health.v1 for Kubernetes gRPC probes: SERVING exactly when the server is ready."""

    SERVICES = ("", SERVICE)
    WATCH_INTERVAL_S = 0.5

    def __init__(self, dataplane: DataPlane) -> None:
        self._dp = dataplane
        self._closed = asyncio.Event()

    def close(self) -> None:
        """End every Watch stream (at shutdown: an open stream would hold the server's grace)."""
        self._closed.set()

    def _status(self, service: str) -> int:
        if service not in self.SERVICES:
            return health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
        if self._dp.ready():
            return health_pb2.HealthCheckResponse.SERVING
        return health_pb2.HealthCheckResponse.NOT_SERVING

    async def Check(self, request, context) -> health_pb2.HealthCheckResponse:
        """Counted like /readyz (a GET); Watch streams are not (they last as long as the client)."""
        started = time.perf_counter()
        known = request.service in self.SERVICES
        _record(self._dp.metrics, CHECK_ROUTE, "GET", 200 if known else 404, started)
        if not known:
            await context.abort(Code.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=self._status(request.service))

    async def Watch(self, request, context) -> None:
        """Every change of status (NOT_SERVING from SIGTERM on), until the client goes
        away or the server stops (`close`)."""
        last = None
        while not self._closed.is_set():
            status = self._status(request.service)
            if status != last:
                await context.write(health_pb2.HealthCheckResponse(status=status))
                last = status
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), self.WATCH_INTERVAL_S)


class GrpcServer:
    """grpc.aio server on the running loop; `port` is the one bound (after `start`)."""

    def __init__(self, dataplane: DataPlane, settings: Settings) -> None:
        self._settings = settings
        options = [
            ("grpc.max_receive_message_length", settings.max_body_bytes),
            ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
        ]
        self._server = grpc.aio.server(options=options)
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(
            InferenceServicer(dataplane), self._server
        )
        self._health = HealthServicer(dataplane)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        self.port = 0

    async def start(self) -> int:
        settings = self._settings
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        address = f"{host}:{settings.grpc_port}"
        try:
            self.port = self._server.add_insecure_port(address)
        except RuntimeError as exc:
            raise StartupError(f"cannot listen for gRPC on {address}: {exc}") from None
        await self._server.start()
        log.info(
            "gRPC (Open Inference Protocol, grpc.health.v1) on %s:%d", settings.host, self.port
        )
        return self.port

    async def stop(self, grace_s: float) -> None:
        """Refuse new calls, let running ones finish for up to `grace_s`, then close.

        Health Watch streams end first: they never finish by themselves."""
        self._health.close()
        await self._server.stop(grace_s)


async def start_grpc(dataplane: DataPlane, settings: Settings) -> GrpcServer | None:
    """The gRPC server, listening; None when `grpc_port` is 0."""
    if settings.grpc_port == 0:
        return None
    server = GrpcServer(dataplane, settings)
    await server.start()
    return server
