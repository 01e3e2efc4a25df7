"""The Open Inference Protocol v2 codec (KServe / Triton): JSON tensors and the binary tensor data
extension, both ways, and the sequence extension's parameters.

Inputs: `input`, `h0`, `c0` (LSTM) and `lengths` (INT64 or INT32); outputs: `output`, `h_n`,
`c_n` (LSTM). Only parsing and shaping live here; the data plane does the work.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import orjson
from prometheus_client.samples import Sample

from service.catalog.spec import ModelSpec
from service.codecs.envelope import loads, parse
from service.codecs.pipeline import Decoded, Encoded, Sequence, Served, result_outputs
from service.codecs.tensors import check_shape, integral_ids
from service.core.errors import InvalidInput, Loc, MalformedBody, ModelNotFound
from service.core.schemas.config import DType, RNNConfig
from service.core.schemas.oip import FROM_OIP, TO_OIP, InferRequest, ModelMetadata, TensorMetadata
from service.engine.job import Inputs
from service.engine.tensor import (
    CARRIER,
    WireTensor,
    bf16_bits_to_f32,
    cast_numbers,
    check_raw_finite,
)

HEADER = "inference-header-content-length"
STATE_INPUTS = ("h0", "c0")
_INT_DTYPES: dict[str, np.dtype[Any]] = {"INT64": np.dtype("<i8"), "INT32": np.dtype("<i4")}
VERSION = "1"
# the protocol extensions the server metadata lists (over HTTP and gRPC alike)
EXTENSIONS = ["binary_tensor_data", "sequence", "model_repository", "statistics"]


def check_version(name: str, version: str | None) -> None:
    """404 for a version other than the one every model has (the metadata's `versions`); none
    or "" means that one."""
    if version and version != VERSION:
        raise ModelNotFound(f"model {name!r} has no version {version!r}; its versions: [{VERSION}]")


def output_names(config: RNNConfig) -> tuple[str, ...]:
    return config.answer_names


def input_names(config: RNNConfig) -> tuple[str, ...]:
    return ("input", "h0", "c0", "lengths") if config.has_cell else ("input", "h0", "lengths")


def metadata(spec: ModelSpec) -> ModelMetadata:
    """The model's metadata: its tensors, with -1 for variable dimensions."""
    c = spec.config
    datatype = TO_OIP[c.dtype]
    state_in = [
        TensorMetadata(name=n, datatype=datatype, shape=[c.state_rows, -1, size])
        for n, size in zip(STATE_INPUTS, c.state_sizes, strict=False)
    ]
    state_out = [
        TensorMetadata(name=n, datatype=datatype, shape=[c.state_rows, -1, size])
        for n, size in zip(("h_n", "c_n"), c.state_sizes, strict=False)
    ]
    head_out = []
    if c.head is not None:
        k = c.head.out_features
        shape = [-1, -1, k] if c.head.on == "every_step" else [-1, k]
        head_out.append(TensorMetadata(name=c.head.output_name, datatype=datatype, shape=shape))
    x = (
        TensorMetadata(name="input", datatype="INT64", shape=[-1, -1])
        if c.ids
        else TensorMetadata(name="input", datatype=datatype, shape=[-1, -1, c.input_size])
    )
    return ModelMetadata(
        name=spec.name,
        versions=[VERSION],
        platform=f"pytorch_{c.mode.lower()}",
        inputs=[x, *state_in, TensorMetadata(name="lengths", datatype="INT64", shape=[-1])],
        outputs=[
            TensorMetadata(name="output", datatype=datatype, shape=[-1, -1, c.output_size]),
            *state_out,
            *head_out,
        ],
    )


def _tensor_values(
    item: Any, binary: memoryview, offset: int, np_dtype: np.dtype[Any], loc: Loc
) -> tuple[np.ndarray[Any, Any], int]:
    """An input's values, from the binary section (moving `offset`) or from JSON `data`."""
    count = math.prod(item.shape)
    size = (item.parameters or {}).get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or size < 0 or offset + size > len(binary):
            raise InvalidInput.at(loc, f"binary_data_size {size!r} runs past the binary data")
        if size != count * np_dtype.itemsize:
            raise InvalidInput.at(
                loc, f"shape {item.shape} of {item.datatype} needs {count * np_dtype.itemsize} "
                f"bytes, got binary_data_size {size}",
            )  # fmt: skip
        arr = np.frombuffer(binary[offset : offset + size], dtype=np_dtype)
        return arr.reshape(item.shape), offset + size
    if item.data is None:
        raise InvalidInput.at(loc, "expected data, or binary_data_size with binary data")
    try:
        arr = np.asarray(item.data)
    except (ValueError, TypeError):
        raise InvalidInput.at(loc, "expected a rectangular list of numbers") from None
    if arr.dtype.kind not in "iuf" and arr.size:
        raise InvalidInput.at(loc, "expected numbers")
    if arr.size != count:
        raise InvalidInput.at(loc, f"shape {item.shape} needs {count} values, got {arr.size}")
    return arr.reshape(item.shape), offset


_UINT64_MAX = (1 << 64) - 1


def _flag(params: dict[str, Any], name: str, where: Loc) -> bool:
    value = params.get(name, False)
    if type(value) is not bool:
        raise InvalidInput.at(
            (*where, "parameters", name), f"expected a boolean, got {_short(value)}"
        )
    return value


def _sequence(params: dict[str, Any], where: Loc) -> Sequence | None:
    """The sequence extension's parameters, typed as the protocol types them: `sequence_id` a
    uint64 or a string (0 and "" mean none; 1 and "1" are different sequences), the flags
    booleans. The id's length is bounded by the data plane (RNN_SERVE_MAX_SEQUENCE_ID_LENGTH)."""
    sequence_id = params.get("sequence_id")
    start, end = _flag(params, "sequence_start", where), _flag(params, "sequence_end", where)
    if sequence_id is None or sequence_id == 0 or sequence_id == "":
        if start or end:
            raise InvalidInput.at(
                (*where, "parameters", "sequence_id"),
                "sequence_start and sequence_end need a sequence_id",
            )
        return None
    if type(sequence_id) is int:
        if not 0 < sequence_id <= _UINT64_MAX:
            raise InvalidInput.at(
                (*where, "parameters", "sequence_id"),
                f"expected a uint64 or a string, got {sequence_id}",
            )
        return Sequence(str(sequence_id), start, end, numeric=True)
    if type(sequence_id) is not str:
        raise InvalidInput.at(
            (*where, "parameters", "sequence_id"),
            f"expected a uint64 or a string, got {_short(sequence_id)}",
        )
    return Sequence(sequence_id, start, end)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


Values = tuple[np.ndarray[Any, Any], bool]  # an input's values, and whether they were numbers
ValuesOf = Callable[[int, Any, np.dtype[Any], Loc], Values]


def decode_request(
    items: Iterable[Any],
    values: ValuesOf,
    requested: list[str],
    params: dict[str, Any],
    config: RNNConfig,
    max_elements: int,
    where: Loc,
) -> Decoded:
    """An infer request's inputs, requested outputs and parameters, checked as the protocol
    and the model want them, whatever carried them: OIP's JSON (with the binary extension) or
    its gRPC messages. `items` have a `name`, a `datatype` and a `shape`; `values(i, item,
    carrier, loc)` gives the i-th input's values and whether they came as numbers (to be cast
    to the declared dtype, range-checked) rather than as raw bytes (checked finite); `where`
    prefixes every field's location (("body",) over HTTP)."""
    names = input_names(config)
    tensors: dict[str, Any] = {}
    for i, item in enumerate(items):
        loc = (*where, "inputs", i)
        if item.name not in names or item.name in tensors:
            raise InvalidInput.at(
                loc, f"unexpected input {item.name!r}; expected {', '.join(names)} once each"
            )
        shape = list(item.shape)
        if any(type(d) is not int or d < 0 for d in shape) or len(shape) > 3:
            raise InvalidInput.at(loc, f"invalid shape {_short(shape)}")
        if math.prod(shape) > max_elements:
            raise InvalidInput.at(loc, f"{item.name} has over {max_elements} elements")
        check_shape(shape, (*loc, "shape"), max_elements)  # dimensions beside a 0
        if item.name == "lengths":
            np_dtype = _INT_DTYPES.get(item.datatype)
            if np_dtype is None or len(shape) != 1:
                raise InvalidInput.at(
                    loc, f"lengths must be INT64 with shape [N], got {item.datatype[:40]} "
                    f"{shape}",
                )  # fmt: skip
            arr, _ = values(i, item, np_dtype, loc)
            if arr.dtype.kind != "i" and arr.size:
                raise InvalidInput.at(loc, "lengths must be integers")
            tensors["lengths"] = [int(n) for n in arr]
            continue
        if item.name == "input" and config.ids:  # token ids for the embedding
            np_dtype = _INT_DTYPES.get(item.datatype)
            if np_dtype is None:
                raise InvalidInput.at(
                    loc, "the input of a model with an embedding is token ids: INT64 or INT32, "
                    f"got {_short(item.datatype)}",
                )  # fmt: skip
            arr, _ = values(i, item, np_dtype, loc)
            tensors["input"] = WireTensor(integral_ids(arr, loc), "int64", declared=True)
            continue
        dtype: DType | None = FROM_OIP.get(item.datatype)
        if dtype is None:
            raise InvalidInput.at(
                loc, f"datatype must be one of {', '.join(FROM_OIP)}, got {_short(item.datatype)}"
            )
        arr, numbers = values(i, item, CARRIER[dtype], loc)
        if numbers:  # numbers -> the declared dtype, range-checked
            arr = cast_numbers(arr, dtype, loc)
        else:
            check_raw_finite(arr, dtype, loc)
        tensors[item.name] = WireTensor(arr, dtype, declared=True)
    if "input" not in tensors:
        raise InvalidInput.at((*where, "inputs"), "the input tensor named 'input' is required")
    outputs = output_names(config)
    unknown = sorted(set(requested) - set(outputs))
    if unknown:
        raise InvalidInput.at(
            (*where, "outputs"),
            f"unknown outputs {_short(unknown)}; the model has {', '.join(outputs)}",
        )
    inputs = Inputs(tensors["input"], tensors.get("h0"), tensors.get("c0"), tensors.get("lengths"))
    sequence = _sequence(params, where)
    start_step = params.get("start_step")  # rnn-serve's: exactly-once requests
    if start_step is not None and (type(start_step) is not int or start_step < 0):
        raise InvalidInput.at(
            (*where, "parameters", "start_step"),
            f"expected a non-negative integer, got {_short(start_step)}",
        )
    return Decoded(inputs, sequence, start_step)


class OIPInfer:
    """An infer request: a JSON header, then (binary extension) the raw tensors."""

    def __init__(self, body: bytes, header_length: str | None) -> None:
        if header_length is not None:
            try:
                length = int(header_length)
            except ValueError:
                raise MalformedBody(
                    f"Inference-Header-Content-Length must be an integer, got {header_length!r}"
                ) from None
            if not 0 <= length <= len(body):
                raise MalformedBody(f"Inference-Header-Content-Length {length} is out of range")
            head, self._binary = body[:length], memoryview(body)[length:]
        else:
            head, self._binary = body, memoryview(b"")
        self.req = parse(InferRequest, loads(head, "the inference header"))
        self._params = self.req.parameters or {}

    def decode(self, config: RNNConfig, max_elements: int) -> Decoded:
        """The same tensors v1 decodes (dtype always declared, as OIP requires)."""
        offset = 0

        def values(i: int, item: Any, np_dtype: np.dtype[Any], loc: Loc) -> Values:
            nonlocal offset
            arr, offset = _tensor_values(item, self._binary, offset, np_dtype, loc)
            return arr, item.data is not None

        requested = [o.name for o in self.req.outputs or []]
        return decode_request(
            self.req.inputs, values, requested, self._params, config, max_elements, ("body",)
        )

    def _wants_binary(self, name: str) -> bool:
        default = bool(self._params.get("binary_data_output", False))
        for out in self.req.outputs or []:
            if out.name == name:
                return bool((out.parameters or {}).get("binary_data", default))
        return default

    def encode(self, served: Served) -> Encoded:
        result, spec = served.result, served.spec
        dtype = spec.config.dtype
        requested = [o.name for o in self.req.outputs] if self.req.outputs else None
        outputs, chunks = [], []
        for name, arr in result_outputs(spec.config, result, requested):
            item: dict[str, Any] = {
                "name": name,
                "datatype": TO_OIP[dtype],
                "shape": list(arr.shape),
            }
            if self._wants_binary(name):
                raw = np.ascontiguousarray(arr).tobytes()
                item["parameters"] = {"binary_data_size": len(raw)}
                chunks.append(raw)
            else:
                values = bf16_bits_to_f32(arr) if dtype == "bfloat16" else arr
                item["data"] = np.ascontiguousarray(values).reshape(-1)
            outputs.append(item)
        answer: dict[str, Any] = {
            "model_name": spec.name,
            "model_version": VERSION,
            "outputs": outputs,
        }
        if self.req.id is not None:
            answer["id"] = self.req.id
        if served.session is not None:  # a sequence: the steps it has consumed (start_step's)
            answer["parameters"] = {"sequence_steps": served.session.steps}
        head = orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)
        if not chunks:
            return Encoded(head)
        return Encoded(
            b"".join([head, *chunks]),
            "application/octet-stream",
            {"Inference-Header-Content-Length": str(len(head))},
        )


# --- the model configuration, repository and statistics extensions (HTTP and gRPC alike) -----
def model_config(spec: ModelSpec, max_batch: int) -> dict[str, Any]:
    meta = metadata(spec)
    tensors = {t.name: t for t in [*meta.inputs, *meta.outputs]}

    def entry(name: str) -> dict[str, Any]:
        t = tensors[name]
        return {"name": name, "data_type": f"TYPE_{t.datatype}", "dims": t.shape,
                "optional": name != "input"}  # fmt: skip

    return {
        "name": spec.name,
        "platform": meta.platform,
        "backend": "rnn-serve",
        "version_policy": {"specific": {"versions": [int(VERSION)]}},
        "max_batch_size": 0,  # batch dimensions are in dims (-1): the server batches itself
        "dynamic_batching": {"max_queue_delay_microseconds": 0, "max_batch_sequences": max_batch},
        "sequence_batching": {"control_input": [], "state": []},
        "input": [entry(n) for n in input_names(spec.config)],
        "output": [entry(n) for n in output_names(spec.config)],
        "parameters": {
            k: {"string_value": orjson.dumps(v).decode() if isinstance(v, dict) else str(v)}
            for k, v in spec.config.model_dump(mode="json").items()
        },
    }


def index_entries(models: list[tuple[ModelSpec, bool]]) -> list[dict[str, Any]]:
    """The repository extension's index: every model, READY where it is loaded on the device."""
    return [
        {"name": spec.name, "version": VERSION, "state": "READY" if loaded else "UNAVAILABLE",
         "reason": "" if loaded else "not loaded on the device: a request or load builds it"}
        for spec, loaded in models
    ]  # fmt: skip


STATS_FAMILIES = (
    "rnn_serve_stage_seconds", "rnn_serve_model_inferences", "rnn_serve_model_executions",
    "rnn_serve_model_last_inference_timestamp_seconds",
)  # fmt: skip


def statistics(collected: dict[str, list[Sample]], names: list[str]) -> dict[str, Any]:
    """Triton's statistics form, read from the Prometheus metrics (so with several front-end
    processes it counts all of them)."""
    per: dict[str, dict[tuple[str, str], float]] = {n: {} for n in names}
    for sample in collected["rnn_serve_stage_seconds"]:
        model = sample.labels.get("model")
        if model in per and sample.name.endswith(("_sum", "_count")):
            key = (sample.labels["stage"], sample.name.rsplit("_", 1)[1])
            per[model][key] = per[model].get(key, 0.0) + sample.value
    counts: dict[tuple[str, str], float] = {}
    for family in ("rnn_serve_model_inferences", "rnn_serve_model_executions"):
        for sample in collected[family]:
            if sample.name.endswith("_total"):
                tag = sample.labels.get("outcome", "execution")
                key = (sample.labels["model"], tag)
                counts[key] = counts.get(key, 0.0) + sample.value
    last = {
        s.labels["model"]: s.value
        for s in collected["rnn_serve_model_last_inference_timestamp_seconds"]
    }

    def duration(model: str, stage: str) -> dict[str, int]:
        got = per[model]
        return {"count": int(got.get((stage, "count"), 0)),
                "ns": int(got.get((stage, "sum"), 0.0) * 1e9)}  # fmt: skip

    stats = []
    for name in names:
        stages = {s: duration(name, s) for s in ("decode", "queue", "compute", "encode")}
        success = int(counts.get((name, "success"), 0))
        stats.append({
            "name": name, "version": VERSION,
            "last_inference": int(last.get(name, 0.0) * 1000),
            "inference_count": success, "execution_count": int(counts.get((name, "execution"), 0)),
            "inference_stats": {
                "success": {"count": success, "ns": sum(d["ns"] for d in stages.values())},
                "fail": {"count": int(counts.get((name, "fail"), 0)), "ns": 0},
                "queue": stages["queue"], "compute_input": stages["decode"],
                "compute_infer": stages["compute"], "compute_output": stages["encode"],
                "cache_hit": {"count": 0, "ns": 0}, "cache_miss": {"count": 0, "ns": 0},
            },
            "batch_stats": [],
        })  # fmt: skip
    return {"model_stats": stats}
