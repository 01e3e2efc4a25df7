"""The catalog of registered models: specs, the repository they are stored in, and the quotas.
Torch-free: every process uses it, front-ends included. The modules built from it are the
engine's (`service.engine.modules`)."""
