"""The wire forms of tensors: OIP datatypes, base64 tensors, the binary extension's requests
and answers, weights files."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

_NP: dict[str, np.dtype[Any]] = {
    "FP32": np.dtype("<f4"),
    "FP16": np.dtype("<f2"),
    "FP64": np.dtype("<f8"),
    "BF16": np.dtype("<u2"),  # bfloat16 travels as its bit patterns
}
_OIP: dict[np.dtype[Any], str] = {
    np.dtype("float32"): "FP32",
    np.dtype("float16"): "FP16",
    np.dtype("float64"): "FP64",
}


def b64_tensor(array: Any, dtype: str = "float32") -> dict[str, Any]:
    """An array as the v1 API's base64 tensor form (raw little-endian, row-major bytes)."""
    a = np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<"))
    return {"shape": list(a.shape), "dtype": dtype, "b64": base64.b64encode(a.tobytes()).decode()}


def from_b64_tensor(wire: Mapping[str, Any]) -> np.ndarray[Any, Any]:
    """A v1 base64 tensor (float16/32/64) back to an array."""
    raw = base64.b64decode(str(wire["b64"]))
    dtype = np.dtype(str(wire["dtype"])).newbyteorder("<")
    return np.frombuffer(raw, dtype=dtype).reshape(wire["shape"])


def _as_numpy(value: Any) -> tuple[np.ndarray[Any, Any], bool]:
    """(array, was_torch): torch tensors are converted (bfloat16 through its bits)."""
    if type(value).__module__.startswith("torch"):
        import torch

        t = value.detach().cpu().contiguous()
        if t.dtype == torch.bfloat16:
            return t.view(torch.int16).numpy().view(np.uint16), True
        return t.numpy(), True
    return np.ascontiguousarray(value), False


@dataclass
class _Infer:
    """A forward as an OIP binary request, and the decoding of its answer."""

    input: Any
    hx: Any = None  # h0, or (h0, c0) for an LSTM
    lengths: Any = None
    dtype: str | None = None  # OIP datatype, e.g. "BF16"; default from the input's dtype
    parameters: dict[str, Any] = field(default_factory=dict)  # e.g. the sequence extension's
    torch_out: bool = field(default=False, init=False)
    head: dict[str, Any] = field(default_factory=dict, init=False)  # the last answer's JSON head

    def encode(self) -> tuple[bytes, dict[str, str]]:
        inputs, chunks = [], []
        h0, c0 = self.hx if isinstance(self.hx, tuple | list) else (self.hx, None)
        for name, value in (("input", self.input), ("h0", h0), ("c0", c0)):
            if value is None:
                continue
            arr, was_torch = _as_numpy(value)
            self.torch_out = self.torch_out or (was_torch and name == "input")
            datatype = self.dtype or ("BF16" if arr.dtype == np.uint16 else _OIP.get(arr.dtype))
            if datatype is None:
                arr, datatype = arr.astype("<f4"), "FP32"
            raw = np.ascontiguousarray(arr, dtype=_NP[datatype]).tobytes()
            inputs.append({"name": name, "shape": list(arr.shape), "datatype": datatype,
                           "parameters": {"binary_data_size": len(raw)}})  # fmt: skip
            chunks.append(raw)
        if self.lengths is not None:
            raw = np.asarray(self.lengths, dtype="<i8").tobytes()
            inputs.append({"name": "lengths", "shape": [len(raw) // 8], "datatype": "INT64",
                           "parameters": {"binary_data_size": len(raw)}})  # fmt: skip
            chunks.append(raw)
        params = {"binary_data_output": True, **self.parameters}
        head = _dumps({"inputs": inputs, "parameters": params})
        headers = {
            "Inference-Header-Content-Length": str(len(head)),
            "Content-Type": "application/octet-stream",
        }
        return b"".join([head, *chunks]), headers

    def decode(self, response: httpx.Response) -> tuple[Any, Any]:
        length = int(response.headers.get("inference-header-content-length", len(response.content)))
        head = self.head = json.loads(response.content[:length])
        offset, found = length, {}
        for out in head["outputs"]:
            dtype = _NP[out["datatype"]]
            if "data" in out:
                json_dtype = dtype if out["datatype"] != "BF16" else np.dtype("<f4")
                arr = np.asarray(out["data"], dtype=json_dtype)
            else:
                size = out["parameters"]["binary_data_size"]
                arr = np.frombuffer(response.content[offset : offset + size], dtype=dtype)
                offset += size
            found[out["name"]] = arr.reshape(out["shape"])
        if self.torch_out:
            import torch

            def tensor(a: np.ndarray[Any, Any]) -> Any:
                t = torch.from_numpy(a.copy())
                return t.view(torch.bfloat16) if a.dtype == np.uint16 else t

            found = {k: tensor(v) for k, v in found.items()}
        # as torch returns them: output, h_n — or output, (h_n, c_n) for an LSTM
        if "c_n" in found:
            return found["output"], (found["h_n"], found["c_n"])
        return found["output"], found["h_n"]


def _weights_bytes(weights: Any) -> bytes:
    if isinstance(weights, bytes | bytearray):
        return bytes(weights)
    if isinstance(weights, str | Path):
        return Path(weights).read_bytes()
    from safetensors.torch import save  # a state_dict

    return save({k: v.detach().cpu().contiguous() for k, v in weights.items()})


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()
