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
