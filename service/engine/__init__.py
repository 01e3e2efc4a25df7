"""The engine: tensor codecs, validation in torch's order, and the worker that runs torch."""
