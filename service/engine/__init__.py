"""The engine: the device. Its values (tensors, jobs, states), validation in torch's order, the
batcher, the worker thread that runs torch, the runner and the module cache; the `Backend`
interface the data plane calls."""
