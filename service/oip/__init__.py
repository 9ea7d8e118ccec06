"""Open Inference Protocol (KServe v2 / Triton) for convserve: pure request/response code.

Nothing here touches FastAPI or the engine, so the protocol can be tested on
bytes alone; `service.routes.v2` wires it to the server.
"""
