"""Checkpoints: one ``.npz`` file, written atomically, loaded without pickle.

A checkpoint holds a nested dict (model state, optimiser and scheduler
state, epoch, RNG state, configuration).  Arrays become ``.npz`` members
named by their path in the dict (``model/conv1.weight``); everything else
(numbers, strings, lists, None) goes into one JSON header member.  Loading
uses ``numpy.load(allow_pickle=False)``, so a checkpoint can never execute
code, and every array is returned on the host: the caller moves it to the
device it wants.
"""
from __future__ import annotations

import json
import os
import zipfile

import numpy as np

from .fileio import atomic_write

FORMAT = "tinygrad_cnn.checkpoint/1"
_HEADER = "__header__"


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, truncated or of the wrong kind."""


def _host(value):
    """Tensors and device arrays -> host NumPy arrays; other values unchanged."""
    from .tensor import Tensor, _find_backend_of
    if isinstance(value, Tensor):
        return value.numpy()
    if isinstance(value, np.ndarray):
        return value
    backend = _find_backend_of(value)
    return backend.to_numpy(value) if backend is not None else value


def _split(tree, prefix, arrays):
    """Replace arrays in ``tree`` by ``{"__array__": key}`` references."""
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            if not isinstance(k, str) or "/" in k:
                raise TypeError(f"checkpoint keys must be strings without '/', got {k!r}")
            out[k] = _split(v, f"{prefix}{k}/", arrays)
        return out
    if isinstance(tree, (list, tuple)):
        return [_split(v, f"{prefix}{i}/", arrays) for i, v in enumerate(tree)]
    value = _host(tree)
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "fiub":
            raise TypeError(f"cannot store an array of dtype {value.dtype} at {prefix[:-1]!r}")
        key = prefix[:-1]
        arrays[key] = value
        return {"__array__": key}
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store a {type(value).__name__} at {prefix[:-1]!r} in a checkpoint")


def _join(tree, arrays, path):
    if isinstance(tree, dict):
        if set(tree) == {"__array__"}:
            key = tree["__array__"]
            if key not in arrays:
                raise CheckpointError(f"{path}: the header names array {key!r}, which the file "
                                      f"does not contain (file damaged or edited)")
            return arrays[key]
        return {k: _join(v, arrays, path) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_join(v, arrays, path) for v in tree]
    return tree


def save(path, tree):
    """Write ``tree`` (a dict) to ``path`` atomically.

    The data go to a temporary file in the same directory, which is
    flushed, fsynced and then renamed over ``path``: a crash mid-save leaves
    any previous checkpoint at ``path`` intact.
    """
    if not isinstance(tree, dict):
        raise TypeError("a checkpoint is a dict")
    arrays = {}
    header = {"format": FORMAT, "tree": _split(tree, "", arrays)}
    members = dict(arrays)
    members[_HEADER] = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
    atomic_write(path, lambda f: np.savez(f, **members))
    return os.fspath(path)


def load(path):
    """Read a checkpoint written by :func:`save`; arrays come back as NumPy arrays."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"no checkpoint at {path}")
    if os.path.isdir(path):
        raise CheckpointError(f"{path} is a directory, not a checkpoint file")
    # Check the zip signature first: on anything else np.load would guess at
    # other formats and, for arbitrary bytes, say the file holds pickled data.
    try:
        is_zip = zipfile.is_zipfile(path)
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e}") from None
    if not is_zip:
        raise CheckpointError(f"{path} is not a readable checkpoint (not an .npz file, or "
                              f"truncated)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            members = {k: npz[k] for k in npz.files}
    except ValueError as e:
        if "pickle" in str(e):
            raise CheckpointError(f"{path} holds pickled (object) arrays, which a checkpoint "
                                  f"never contains and which are not loaded, since "
                                  f"unpickling can run code") from None
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or corrupt "
                              f"file?): {type(e).__name__}: {e}") from None
    except (zipfile.BadZipFile, EOFError, OSError, KeyError) as e:
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or corrupt "
                              f"file?): {type(e).__name__}: {e}") from None
    if _HEADER not in members:
        raise CheckpointError(f"{path} is an .npz file but not a tinygrad_cnn checkpoint "
                              f"(it has no {_HEADER} member)")
    try:
        header = json.loads(members.pop(_HEADER).tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: the checkpoint header is damaged: {e}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CheckpointError(f"{path}: unknown checkpoint format "
                              f"{header.get('format') if isinstance(header, dict) else header!r}; "
                              f"expected {FORMAT}")
    if "tree" not in header:
        raise CheckpointError(f"{path}: the checkpoint header has no 'tree' entry (file damaged "
                              f"or edited)")
    try:
        return _join(header["tree"], members, path)
    except (TypeError, AttributeError) as e:
        raise CheckpointError(f"{path}: the checkpoint header is damaged: {e}") from None
