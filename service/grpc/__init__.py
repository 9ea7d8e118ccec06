"""The Open Inference Protocol over gRPC (KServe's `inference.GRPCInferenceService`).

`codec` converts protobuf messages to and from the protocol types `service.oip`
already checks for REST; `server` runs the service and `grpc.health.v1.Health`
on the HTTP server's event loop. The `*_pb2*` modules are generated
(`make grpc-stubs`) from grpc_predict_v2.proto.
"""
