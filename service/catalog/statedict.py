"""A trained module's state_dict names -> the names a model stores, without torch.

`torch.save(model.state_dict())` (converted by `rnn-serve models import`) or
`safetensors.torch.save_file(model.state_dict(), ...)` names each tensor by its submodule:
`embedding.weight`, `lstm.weight_ih_l0`, `fc.weight`. A model stores its core's tensors under
`rnn.`, the embedding's under `embedding.` and the head's under `head.` (a core alone: unprefixed,
as nn.RNN's own state_dict). Which prefix is which is read from the names where it can be:

- the core: the one prefix that holds `weight_ih_l0` (any name: `lstm`, `rnn`, `encoder.gru`);
- the embedding: `embedding`, `embeddings`, `embed`, `emb` or `encoder`, else the one prefix left
  that holds only a `weight`;
- the head: the one prefix left (`fc`, `head`, `linear`, `decoder` or any other).

`prefixes` names them where that is ambiguous: `{"embedding": "tok", "core": "lstm", "head":
"out"}` (`""` for tensors with no prefix). Names that fit nothing stay as they are, so the
weights check reports them, with every missing tensor, in one 422.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping

from service.catalog.weights import CORE, EMBEDDING, HEAD, layered
from service.core.errors import InvalidInput
from service.core.schemas.config import RNNConfig

LAYERS = ("embedding", "core", "head")
_EMBEDDING_NAMES = ("embedding", "embeddings", "embed", "emb", "encoder")
_HEAD_NAMES = ("fc", "head", "linear", "decoder", "classifier", "out", "output")
_LOC = ("query", "prefixes")


def parse_prefixes(text: str | None) -> dict[str, str] | None:
    """`embedding=tok,core=lstm,head=out` (the API's query form) -> a mapping."""
    if text is None:
        return None
    found: dict[str, str] = {}
    for item in text.split(","):
        layer, sep, prefix = item.partition("=")
        layer, prefix = layer.strip(), prefix.strip().rstrip(".")
        if not sep or layer not in LAYERS or layer in found:
            raise InvalidInput.at(
                _LOC,
                "expected layer=prefix pairs separated by commas, each layer (embedding, core, "
                f"head) at most once, got {text!r:.120}",
            )
        found[layer] = prefix
    return found


def _split(name: str) -> tuple[str, str]:
    prefix, _, leaf = name.rpartition(".")
    return prefix, leaf


def stored_names(
    names: list[str], config: RNNConfig, prefixes: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Each given name -> its stored name (names that fit no layer map to themselves)."""
    given = dict(prefixes or {})
    groups: dict[str, list[str]] = {}
    for name in names:
        prefix, leaf = _split(name)
        groups.setdefault(prefix, []).append(leaf)
    wanted = {
        "core": True,
        "embedding": config.embedding is not None,
        "head": config.head is not None,
    }
    for layer, prefix in given.items():
        if not wanted[layer]:
            raise InvalidInput.at(_LOC, f"the model has no {layer}; do not name a prefix for it")
        if prefix not in groups:
            raise InvalidInput.at(
                _LOC, f"no tensor has the {layer} prefix {prefix!r}; the file has {sorted(groups)}"
            )
    chosen: dict[str, str] = {}
    if "core" in given:
        chosen["core"] = given["core"]
    else:
        cores = [p for p, leaves in groups.items() if "weight_ih_l0" in leaves]
        if len(cores) > 1:
            raise InvalidInput.at(
                _LOC, f"several prefixes hold a recurrent core: {sorted(cores)}; name one (core=…)"
            )
        if cores:
            chosen["core"] = cores[0]
    left = [p for p in groups if p not in chosen.values() and p not in given.values()]
    if wanted["embedding"]:
        if "embedding" in given:
            chosen["embedding"] = given["embedding"]
        else:
            known = [p for p in _EMBEDDING_NAMES if p in left]
            only_weight = [p for p in left if groups[p] == ["weight"]]
            pick = known[:1] or (
                only_weight if len(only_weight) == 1 and not wanted["head"] else []
            )
            if pick:
                chosen["embedding"] = pick[0]
        left = [p for p in left if p != chosen.get("embedding")]
    if wanted["head"]:
        if "head" in given:
            chosen["head"] = given["head"]
        else:
            known = [p for p in _HEAD_NAMES if p in left]
            pick = left if len(left) == 1 else known[:1]
            if pick:
                chosen["head"] = pick[0]
    targets = {"core": CORE, "embedding": EMBEDDING, "head": HEAD}
    if not layered(config):
        targets["core"] = ""
    by_prefix = {prefix: targets[layer] for layer, prefix in chosen.items()}
    mapping: dict[str, str] = {}
    for name in names:
        prefix, leaf = _split(name)
        mapping[name] = by_prefix[prefix] + leaf if prefix in by_prefix else name
    return mapping


def rename_safetensors(data: bytes, config: RNNConfig, prefixes: Mapping[str, str] | None) -> bytes:
    """A safetensors file with its tensors renamed to the stored names (its header rewritten;
    the tensors' bytes untouched). A file that is not safetensors is returned as it is, for the
    weights check to refuse it with its reason."""
    if len(data) < 8:
        return data
    (size,) = struct.unpack("<Q", data[:8])
    if size > len(data) - 8:
        return data
    try:
        header = json.loads(data[8 : 8 + size])
    except ValueError:
        return data
    if not isinstance(header, dict):
        return data
    names = [k for k in header if k != "__metadata__"]
    mapping = stored_names(names, config, prefixes)
    if all(old == new for old, new in mapping.items()):
        return data
    renamed = {mapping.get(k, k): v for k, v in header.items()}
    if len(renamed) != len(header):
        raise InvalidInput.at(
            _LOC, "two tensors would have the same stored name; name the prefixes"
        )
    blob = json.dumps(renamed, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the format aligns the data to 8 bytes
    return struct.pack("<Q", len(blob)) + blob + data[8 + size :]


#: what the names and shapes of a state_dict cannot say, and the CLI asks for
ASKED = ("nonlinearity", "activation", "on")


def _pick(
    groups: dict[str, dict[str, tuple[int, ...]]], prefix: str | None, layer: str
) -> dict[str, tuple[int, ...]]:
    if prefix is None:
        return {}
    if prefix not in groups:
        raise InvalidInput.at(
            _LOC, f"no tensor has the {layer} prefix {prefix!r}; the file has {sorted(groups)}"
        )
    return groups[prefix]


def infer_config(
    shapes: Mapping[str, tuple[int, ...]],
    prefixes: Mapping[str, str] | None = None,
    **asked: object,
) -> dict[str, object]:
    """A model config from a trained state_dict's names and shapes: the mode (from the gates'
    rows), input and hidden sizes, layers, directions, bias, proj_size, the vocabulary and the
    head's width. What they cannot say comes in `asked` (`ASKED`, plus `batch_first`, `dtype`,
    `padding_idx`); one missing where the file needs it is a 422 naming it."""
    groups: dict[str, dict[str, tuple[int, ...]]] = {}
    for name, shape in shapes.items():
        prefix, leaf = _split(name)
        groups.setdefault(prefix, {})[leaf] = tuple(shape)
    given = dict(prefixes or {})
    cores = [p for p, leaves in groups.items() if "weight_ih_l0" in leaves]
    core_prefix = given.get("core", cores[0] if len(cores) == 1 else None)
    if core_prefix is None:
        what = f"several: {sorted(cores)}; name one (core=…)" if cores else "none"
        raise InvalidInput.at(_LOC, f"a recurrent core (a weight_ih_l0 tensor): found {what}")
    core = _pick(groups, core_prefix, "core")
    rows, input_size = core["weight_ih_l0"]
    config: dict[str, object] = {"input_size": input_size}
    if "weight_hr_l0" in core:
        proj, hidden = core["weight_hr_l0"]
        config.update(mode="LSTM", proj_size=proj)
    else:
        hidden = core["weight_hh_l0"][1]
        modes = {1: "RNN", 3: "GRU", 4: "LSTM"}
        if rows % hidden or rows // hidden not in modes:
            raise InvalidInput.at(
                _LOC, f"weight_ih_l0 has {rows} rows, not 1, 3 or 4 gates of {hidden}"
            )
        config["mode"] = modes[rows // hidden]
    layers = sum(1 for leaf in core if leaf.startswith("weight_ih_l") and "_reverse" not in leaf)
    config.update(hidden_size=hidden, num_layers=layers, bias="bias_ih_l0" in core,
                  bidirectional="weight_ih_l0_reverse" in core)  # fmt: skip
    if config["mode"] == "RNN":
        config["nonlinearity"] = _asked(asked, "nonlinearity", "the RNN's nonlinearity")
    out = int(core["weight_hr_l0"][0]) if "weight_hr_l0" in core else hidden
    width = (2 if config["bidirectional"] else 1) * out
    roles = {
        p: _role(p, leaves, input_size, width)
        for p, leaves in groups.items()
        if p != core_prefix and p not in given.values()
    }
    unclear = sorted(p for p, role in roles.items() if role == "either")
    if unclear:
        raise InvalidInput.at(_LOC, f"is {unclear[0]!r} the embedding or the head? name it")
    emb_prefix = given.get("embedding") or _only(roles, "embedding")
    head_prefix = given.get("head") or _only(roles, "head")
    if emb_prefix is not None:
        embedding = _pick(groups, emb_prefix, "embedding")
        layer: dict[str, object] = {"num_embeddings": embedding["weight"][0]}
        if asked.get("padding_idx") is not None:
            layer["padding_idx"] = asked["padding_idx"]
        config["embedding"] = layer
    if head_prefix is not None:
        head = _pick(groups, head_prefix, "head")
        config["head"] = {
            "out_features": head["weight"][0], "bias": "bias" in head,
            "activation": _asked(asked, "activation", "the head's activation"),
            "on": _asked(asked, "on", "where the head reads (every_step or last_step)"),
        }  # fmt: skip
    for key in ("batch_first", "dtype"):
        if asked.get(key) is not None:
            config[key] = asked[key]
    return config


def _role(prefix: str, leaves: Mapping[str, tuple[int, ...]], input_size: int, width: int) -> str:
    """What a prefix's tensors can be: an embedding (a weight alone, input_size wide), a head
    (a weight as wide as the core's output, and a bias), both (its name decides), or neither."""
    embedding = set(leaves) == {"weight"} and leaves["weight"][1:] == (input_size,)
    head = set(leaves) in ({"weight"}, {"weight", "bias"}) and leaves["weight"][1:] == (width,)
    if embedding and head:
        if prefix in _EMBEDDING_NAMES:
            return "embedding"
        return "head" if prefix in _HEAD_NAMES else "either"
    return "embedding" if embedding else "head" if head else "neither"


def _only(roles: Mapping[str, str], role: str) -> str | None:
    found = [p for p, r in roles.items() if r == role]
    if len(found) > 1:
        raise InvalidInput.at(_LOC, f"which is the {role}: {sorted(found)}? name it ({role}=…)")
    return found[0] if found else None


def _asked(asked: Mapping[str, object], key: str, what: str) -> object:
    value = asked.get(key)
    if value is None:
        raise InvalidInput.at((key,), f"the file cannot say {what}: give {key}")
    return value
