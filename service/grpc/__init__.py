"""The gRPC front end: Triton's `inference.GRPCInferenceService` (the Open Inference Protocol's
gRPC form plus `ModelStreamInfer`), the standard health service and server reflection, on
`grpc.aio` beside HTTP in each front-end process. The data plane does the work, as for HTTP."""
