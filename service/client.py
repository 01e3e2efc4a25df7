"""The Python client lives in its own distribution, `clients/python` (`rnn_serve_client`: httpx,
numpy and tenacity, no torch or FastAPI). rnn-serve installs it too, and this module re-exports
it for code written against `service.client`."""

from rnn_serve_client import *  # noqa: F403
from rnn_serve_client import __all__  # noqa: F401
