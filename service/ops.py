"""Operator commands against a running server: `rnn-serve models list|show|register|upload|
import|export|delete`.

    rnn-serve models list
    rnn-serve models register my-rnn --config '{"input_size": 10, "hidden_size": 20}'
    rnn-serve models upload my-rnn weights.safetensors      # progress on stderr
    rnn-serve models import model.pt --name kws --activation softmax --on every_step
    rnn-serve models export my-rnn out.safetensors
    rnn-serve models delete my-rnn

The server is --url (RNN_SERVE_URL, default http://127.0.0.1:8000); an API key is --api-key
(RNN_SERVE_API_KEY; registering, uploading and deleting need an admin key). Errors print one
line and exit 1; --json prints the server's answers as they are.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import httpx
from rnn_serve_client import RNNServeError
from rnn_serve_client._errors import _raise_for

CHUNK = 1 << 20  # bytes per progress step


class Progress:
    """`upload my-rnn: 12.0 / 48.0 MiB (25%)`, rewritten in place on a terminal."""

    def __init__(self, what: str, total: int | None, out: TextIO | None = None) -> None:
        # (stderr as it is when the command runs, not when this module was imported)
        self.what, self.total, self.out = what, total, out or sys.stderr
        self.done = 0
        self._shown = 0.0
        self._last: str | None = None  # the line shown last (never the same one twice)

    def advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._shown > 0.2 or (self.total is not None and self.done >= self.total):
            self._shown = now
            self._show()

    def _show(self) -> None:
        mib = self.done / 2**20
        if self.total:
            line = f"{self.what}: {mib:.1f} / {self.total / 2**20:.1f} MiB "
            line += f"({100 * self.done // self.total}%)"
        else:
            line = f"{self.what}: {mib:.1f} MiB"
        if line == self._last:
            return
        self._last = line
        end = "\r" if self.out.isatty() else "\n"
        print(line, end=end, file=self.out, flush=True)

    def finish(self) -> None:
        self._show()
        if self.out.isatty():
            print(file=self.out)


def _client(args: argparse.Namespace) -> httpx.Client:
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    return httpx.Client(base_url=args.url, headers=headers, timeout=args.timeout)


def _print(args: argparse.Namespace, value: Any, text: str) -> None:
    print(json.dumps(value, indent=1) if args.json else text)


def cmd_list(args: argparse.Namespace) -> None:
    with _client(args) as http:
        r = http.get("/v1/models")
        _raise_for(r)
    models = r.json()["models"]
    rows = [("NAME", "MODE", "INPUT", "HIDDEN", "LAYERS", "PARAMETERS", "LOADED")]
    for m in models:
        c = m["config"]
        loaded = "yes" if m["loaded"] else "no"
        rows.append((m["name"], c["mode"], str(c["input_size"]), str(c["hidden_size"]),
                     str(c["num_layers"]), str(m["parameters"]), loaded))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    table = "\n".join(
        "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in rows
    )
    _print(args, models, table)


def cmd_show(args: argparse.Namespace) -> None:
    with _client(args) as http:
        r = http.get(f"/v1/models/{args.name}")
        _raise_for(r)
    print(json.dumps(r.json(), indent=1))


def cmd_register(args: argparse.Namespace) -> None:
    raw = args.config
    if raw.startswith("@"):
        raw = Path(raw[1:]).read_text()
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"rnn-serve: --config is not JSON: {exc}") from None
    with _client(args) as http:
        r = http.post("/v1/models", json={"name": args.name, "config": config})
        _raise_for(r)
    what = "registered" if r.status_code == 201 else "already registered, same config"
    _print(args, r.json(), f"{args.name}: {what}")


def _chunks(path: Path, progress: Progress) -> Iterator[bytes]:
    with path.open("rb") as f:
        while block := f.read(CHUNK):
            progress.advance(len(block))
            yield block


def cmd_upload(args: argparse.Namespace) -> None:
    path = Path(args.file)
    size = path.stat().st_size
    progress = Progress(f"upload {args.name}", size)
    with _client(args) as http:
        r = http.put(
            f"/v1/models/{args.name}/weights",
            content=_chunks(path, progress),
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
        )
        progress.finish()
        _raise_for(r)
    _print(args, r.json(), f"{args.name}: weights uploaded ({size} bytes)")


def read_state_dict(path: Path) -> dict[str, Any]:
    """The tensors of a trained model's file: safetensors, or what `torch.save(model.state_dict())`
    wrote, read with `torch.load(weights_only=True)` (a restricted unpickler: a file that holds
    anything but tensors in dicts is refused, and nothing in it runs)."""
    import pickle
    import warnings

    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return dict(load_file(path))
    except (SafetensorError, OSError):
        pass  # not safetensors: torch.save's format
    try:
        with warnings.catch_warnings():  # (torch's note on a pickle protocol it did not write:
            # the one line below says what is wrong with such a file)
            warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SystemExit(
            f"rnn-serve: {path} is not a state_dict that torch.load(weights_only=True) can read "
            f"({first[:200]}); save model.state_dict(), not the model"
        ) from None
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise SystemExit(
            f"rnn-serve: {path} holds a {type(state).__name__}, not a state_dict (names to "
            "tensors); save model.state_dict()"
        )
    return state


def cmd_import(args: argparse.Namespace) -> None:
    """Read a trained model's state_dict, tell its config from its tensors' shapes (asking for
    what they cannot say), then register the model and upload its weights."""
    import torch
    from safetensors.torch import save

    from service.catalog.statedict import infer_config, parse_prefixes, stored_names
    from service.core.errors import InvalidInput
    from service.core.schemas.config import RNNConfig

    tensors = read_state_dict(Path(args.file))
    asked = {"nonlinearity": args.nonlinearity, "activation": args.activation, "on": args.on,
             "batch_first": args.batch_first or None, "dtype": args.dtype,
             "padding_idx": args.padding_idx}  # fmt: skip
    try:
        prefixes = parse_prefixes(args.map)
        config = infer_config({k: tuple(v.shape) for k, v in tensors.items()}, prefixes, **asked)
        names = stored_names(list(tensors), RNNConfig.model_validate(config), prefixes)
    except InvalidInput as exc:
        flag = {"nonlinearity": "--nonlinearity", "activation": "--activation", "on": "--on"}
        asked_for = next((flag[k] for k in flag if exc.errors and exc.errors[0].loc == (k,)), None)
        hint = f" ({asked_for})" if asked_for else " (--map embedding=…,core=…,head=…)"
        raise SystemExit(f"rnn-serve: {args.file}: {exc.detail}{hint}") from None
    dtype = getattr(torch, str(config.get("dtype", "float32")))
    blob = save({names[k]: v.detach().to(dtype).contiguous() for k, v in tensors.items()})
    with _client(args) as http:
        r = http.post("/v1/models", json={"name": args.name, "config": config})
        _raise_for(r)
        r = http.put(
            f"/v1/models/{args.name}/weights", content=blob,
            headers={"Content-Type": "application/octet-stream"},
        )  # fmt: skip
        _raise_for(r)
    _print(args, r.json(), f"{args.name}: imported, config {json.dumps(config)}")


def cmd_export(args: argparse.Namespace) -> None:
    path = Path(args.file)
    with _client(args) as http, http.stream("GET", f"/v1/models/{args.name}/weights") as r:
        if not r.is_success:
            r.read()
            _raise_for(r)
        total = int(r.headers["content-length"]) if "content-length" in r.headers else None
        progress = Progress(f"export {args.name}", total)
        tmp = path.with_name(path.name + ".part")
        with tmp.open("wb") as out:
            for block in r.iter_bytes(CHUNK):
                out.write(block)
                progress.advance(len(block))
        progress.finish()
        tmp.replace(path)
    print(f"{args.name}: weights written to {path} ({path.stat().st_size} bytes)")


def cmd_delete(args: argparse.Namespace) -> None:
    with _client(args) as http:
        r = http.delete(f"/v1/models/{args.name}")
        _raise_for(r)
    print(f"{args.name}: deleted")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rnn-serve models",
        description="Manage the models of a running rnn-serve.",
        epilog="Environment: RNN_SERVE_URL, RNN_SERVE_API_KEY.",
    )
    p.add_argument("--url", default=os.environ.get("RNN_SERVE_URL", "http://127.0.0.1:8000"))
    p.add_argument("--api-key", default=os.environ.get("RNN_SERVE_API_KEY"))
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per request")
    p.add_argument("--json", action="store_true", help="print the server's answers as JSON")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the registered models").set_defaults(run=cmd_list)
    show = sub.add_parser("show", help="one model's config and state")
    show.add_argument("name")
    show.set_defaults(run=cmd_show)
    reg = sub.add_parser("register", help="register a model (seeded weights until an upload)")
    reg.add_argument("name")
    reg.add_argument("--config", required=True, help="the RNN config: JSON, or @file.json")
    reg.set_defaults(run=cmd_register)
    up = sub.add_parser("upload", help="upload trained weights (a safetensors state_dict)")
    up.add_argument("name")
    up.add_argument("file")
    up.set_defaults(run=cmd_upload)
    imp = sub.add_parser(
        "import",
        help="serve a trained model: its state_dict (torch.save or safetensors), the config "
        "told from its tensors' shapes",
    )
    imp.add_argument("file", help="model.pt (torch.save(model.state_dict())) or .safetensors")
    imp.add_argument("--name", required=True)
    imp.add_argument("--activation", choices=["none", "softmax", "log_softmax", "sigmoid", "tanh"],
                     help="the head's activation (needed when the file has a head)")  # fmt: skip
    imp.add_argument("--on", choices=["every_step", "last_step"],
                     help="where the head reads (needed when the file has a head)")  # fmt: skip
    imp.add_argument("--nonlinearity", choices=["tanh", "relu"],
                     help="an nn.RNN core's (needed for one)")  # fmt: skip
    imp.add_argument("--batch-first", action="store_true", help="the module took (N, L, ...)")
    imp.add_argument("--padding-idx", type=int, help="the embedding's padding_idx, if it had one")
    imp.add_argument("--dtype", choices=["float32", "float16", "bfloat16", "float64"])
    imp.add_argument("--map", help="the layers' prefixes where names cannot tell them: "
                     "embedding=tok,core=lstm,head=out")  # fmt: skip
    imp.set_defaults(run=cmd_import)
    ex = sub.add_parser("export", help="download a model's weights (safetensors)")
    ex.add_argument("name")
    ex.add_argument("file")
    ex.set_defaults(run=cmd_export)
    rm = sub.add_parser("delete", help="delete a model and end its sessions")
    rm.add_argument("name")
    rm.set_defaults(run=cmd_delete)
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    try:
        args.run(args)
    except RNNServeError as exc:
        print(f"rnn-serve: {exc.status}: {exc.detail}", file=sys.stderr)
        return 1
    except httpx.TransportError as exc:
        print(f"rnn-serve: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"rnn-serve: {exc}", file=sys.stderr)
        return 1
    return 0
