"""The engine across processes: front-end processes serve HTTP, one engine process owns the
device.

A front-end's `RemoteBackend` has the `Backend` interface; its calls travel as frames over a
Unix socket to the `EngineServer`, which runs them on the engine host's `LocalBackend`, so the
batcher sees the requests of every front-end and a session works whichever front-end its
request lands on. A frame is a length-prefixed orjson header (the call and the tensors'
descriptors: dtype, shape, offset) and an optional payload. Tensors travel through the
front-end's shared-memory arena (`service.engine.shm`): the request's block holds its inputs and,
once the engine has written it, its answer. A request for which the arena has no room carries
its tensors in the frame's payload instead.

The pieces, one file each: `frames` (length-prefixed frames over a stream), `marshal` (what
crosses: tensors' descriptors, session views, states and errors), `client` (`RemoteBackend`, in
each front-end) and `server` (`EngineServer`, which dispatches each call through a table of
operations). The engine process itself is started by `service.runtime.process`.
"""
