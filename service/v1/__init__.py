"""TensorFlow Serving / KServe V1 REST for convserve: pure request and response code.

No FastAPI and no engine here, so the wire format is tested on bytes alone;
`service.routes.v1` wires it to the data plane.
"""
