"""Checkpoints: one ``.npz`` file, written atomically, loaded without pickle.

A checkpoint holds a nested dict (model state, optimiser and scheduler
state, epoch, RNG state, configuration).  Arrays become ``.npz`` members
named by their path in the dict (``model/conv1.weight``); everything else
(numbers, strings, lists, None) goes into one JSON header member,
``__header__``, where each array is replaced by the reference
``{"__array__": path}``.  The file is a plain ``.npz`` that
``numpy.load(path, allow_pickle=False)`` opens.  Loading never unpickles,
so a checkpoint can never execute code; it accepts numeric arrays only,
in uncompressed members (a compressed one could expand to any size), and
checks each member's claimed size against its stored size before
allocating, and returns every array on the host: the caller moves it to
the device it wants.
"""
from __future__ import annotations

import json
import os
import zipfile

import numpy as np

from ._checks import one_line
from .fileio import atomic_write, read_npy

FORMAT = "tinygrad_cnn.checkpoint/1"
_HEADER = "__header__"   # the member holding the JSON header
_REF = "__array__"       # the key of an array reference in the header tree
_NUMERIC_KINDS = "fiub"  # float, signed/unsigned int, bool: all a checkpoint stores


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
        if _REF in tree:
            # A user dict holding this key could be read back as a reference.
            raise TypeError(f"the key {_REF!r} at {prefix[:-1] or 'the top level'!r} is "
                            f"reserved for array references in checkpoints; rename it")
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
        key = prefix[:-1]
        if value.dtype.kind not in _NUMERIC_KINDS:
            raise TypeError(f"cannot store an array of dtype {value.dtype} at {key!r}")
        if key == _HEADER:
            raise TypeError(f"cannot store an array at the top-level key {_HEADER!r}: that "
                            f"member name holds the checkpoint's header; rename the key")
        if "\0" in key:
            # zip member names end at the first NUL byte, so the name would be cut.
            raise TypeError(f"cannot store an array at {key!r}: array paths may not "
                            f"contain a NUL character")
        arrays[key] = value
        return {_REF: key}
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store a {_type_name(value)} at {prefix[:-1]!r} in a checkpoint"
                    + _conversion_hint(value))


def _type_name(value):
    """``object``, or ``torch.Tensor`` for another library's type: its bare name would
    read as this package's ``Tensor``, which a checkpoint does store."""
    cls = type(value)
    return cls.__qualname__ if cls.__module__ == "builtins" else \
        f"{cls.__module__}.{cls.__qualname__}"


def _conversion_hint(value):
    """How to store another library's array (a PyTorch tensor from ``state_dict()``)."""
    if hasattr(value, "__array__") or hasattr(value, "numpy"):
        return ("; convert it to a NumPy array first (numpy.asarray(value); a PyTorch "
                "tensor: value.detach().cpu().numpy())")
    return ""


def _join(tree, arrays, path):
    if isinstance(tree, dict):
        if set(tree) == {_REF}:
            key = tree[_REF]
            if key not in arrays:
                raise CheckpointError(f"{path}: the header names array {key!r}, which the file "
                                      f"does not contain (file damaged or edited)")
            return arrays[key]
        return {k: _join(v, arrays, path) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_join(v, arrays, path) for v in tree]
    return tree


def _write_members(f, members):
    """Write ``{name: array}`` into binary file ``f`` as an uncompressed ``.npz``.

    Written member by member rather than through ``numpy.savez(f, **members)``:
    as keyword arguments, names like ``file`` or ``allow_pickle`` would
    collide with savez's own parameters.
    """
    with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, array in members.items():
            # force_zip64: the size of a streamed member is not known in advance.
            with zf.open(name + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)


def save(path, tree):
    """Write ``tree`` (a dict) to ``path`` atomically and return the path.

    Values may be nested dicts (string keys without ``'/'``), lists,
    tuples, None, bools, numbers, strings, NumPy scalars, and arrays or
    Tensors of real numbers (float, int, bool) on any device.  Tuples come
    back as lists and NumPy scalars as Python numbers; arrays keep their
    dtype and shape.  Refused with a ``TypeError`` before anything is
    written: other types, non-numeric arrays, a dict with the reserved key
    ``"__array__"``, and an array at the top-level key ``"__header__"``.

    The data go to a temporary file in the same directory, which is
    flushed, fsynced and then renamed over ``path``: a crash mid-save leaves
    any previous checkpoint at ``path`` intact.
    """
    if not isinstance(tree, dict):
        raise TypeError("a checkpoint is a dict")
    arrays = {}
    try:
        header = {"format": FORMAT, "tree": _split(tree, "", arrays)}
        text = json.dumps(header)
    except RecursionError:
        raise ValueError("the checkpoint tree is nested too deeply to be stored") from None
    members = dict(arrays)
    members[_HEADER] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    atomic_write(path, lambda f: _write_members(f, members))
    return os.fspath(path)


def _read_member(zf, info, path):
    """One ``.npy`` member -> a numeric array, refusing what save never writes.

    :func:`save` stores members uncompressed, so anything else is refused
    first: a small compressed member can inflate to any size (a zip bomb),
    and an encrypted one cannot be read.  :func:`~tinygrad_cnn.fileio.read_npy`
    then checks the .npy header's shape and dtype against the member's stored
    size, so a crafted header claiming a huge shape gives an error instead of
    a huge allocation.
    """
    name = info.filename
    where = f"{path}: member {name!r}"
    if info.flag_bits & 0x1:
        raise CheckpointError(f"{where} is encrypted; checkpoints are never encrypted (file "
                              f"damaged or not a checkpoint)")
    if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size:
        raise CheckpointError(f"{where} is stored compressed ({info.compress_size} bytes "
                              f"expanding to {info.file_size}); checkpoints store members "
                              f"uncompressed, and compressed ones are not expanded")
    with zf.open(info) as f:
        array = read_npy(f, info.file_size, where, CheckpointError)
    dtype = array.dtype
    if dtype.kind not in _NUMERIC_KINDS or dtype.fields is not None:
        raise CheckpointError(f"{where} has dtype {dtype}; a checkpoint holds only "
                              f"numeric arrays (float, int or bool)")
    return array


def _check_layout(infos, end, path):
    """Refuse member names given twice and members whose stored bytes overlap.

    Two entries of one name leave it open which one a reader takes.  Stored
    data that reach into the next member (or past the central directory at
    ``end``) are a damaged file or a crafted one: members nested inside one
    another let a small file expand to any size when every member is read.
    Returns ``[(key, info)]``, the key being the name ``numpy.load`` gives.
    """
    keys = {}
    for info in infos:
        # The key as numpy.load names it: the member name without ".npy".
        key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
        if key in keys:
            raise CheckpointError(f"{path}: members {keys[key]!r} and {info.filename!r} both "
                                  f"hold the array {key!r} (file damaged or edited)")
        keys[key] = info.filename
    by_offset = sorted(infos, key=lambda info: info.header_offset)
    bounds = [info.header_offset for info in by_offset[1:]] + [end]
    for info, bound in zip(by_offset, bounds):
        # 30 bytes: the fixed part of the member's local header, before its data.
        if info.header_offset + 30 + info.compress_size > bound:
            raise CheckpointError(f"{path}: member {info.filename!r} claims {info.compress_size} "
                                  f"bytes of data at offset {info.header_offset}, which overlap "
                                  f"the next member or run past the end of the data at "
                                  f"{bound} (file damaged or crafted)")
    return [(key, info) for key, info in zip(keys, infos)]


def _read_members(path):
    """``{key: array}`` of every member of the .npz at ``path``."""
    members = {}
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            end = getattr(zf, "start_dir", os.path.getsize(path))   # the central directory
            for key, info in _check_layout(infos, end, path):
                members[key] = _read_member(zf, info, path)
    except CheckpointError:  # already says what is wrong (and is a ValueError)
        raise
    # TypeError: a last resort for headers NumPy chokes on in ways not checked above.
    except (zipfile.BadZipFile, EOFError, OSError, KeyError, ValueError, TypeError,
            NotImplementedError) as e:
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or corrupt "
                              f"file?): {type(e).__name__}: {e}") from None
    return members


def _parse_int(text):
    """A JSON integer of the header.  Refuse more digits than any value a checkpoint holds
    (and than some Pythons convert, with a message that differs between versions)."""
    if len(text.lstrip("-")) > 4300:
        raise ValueError(f"an integer of {len(text.lstrip('-'))} digits")
    return int(text)


def load(path):
    """Read a checkpoint written by :func:`save`; arrays come back as NumPy arrays.

    Lists and tuples both come back as lists.  Anything wrong with the file
    (missing, truncated, corrupt, foreign, crafted) raises one
    :class:`CheckpointError` naming the file and, where it applies, the member.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"no checkpoint at {path}")
    if os.path.isdir(path):
        raise CheckpointError(f"{path} is a directory, not a checkpoint file")
    # A zip is read from its end: a device or pipe has none (/dev/zero would be read forever).
    if not os.path.isfile(path):
        raise CheckpointError(f"{path} is not a regular file (a device, pipe or socket?); "
                              f"a checkpoint is a file written by save()")
    # Check the zip signature first, so that anything else (text, a truncated
    # file, a bare .npy) gets one plain message.
    try:
        is_zip = zipfile.is_zipfile(path)
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e}") from None
    if not is_zip:
        raise CheckpointError(f"{path} is not a readable checkpoint (not an .npz file, or "
                              f"truncated)")
    members = _read_members(path)
    if _HEADER not in members:
        raise CheckpointError(f"{path} is an .npz file but not a tinygrad_cnn checkpoint "
                              f"(it has no {_HEADER} member)")
    try:
        header = json.loads(members.pop(_HEADER).tobytes().decode("utf-8"),
                            parse_int=_parse_int)
    except ValueError as e:
        raise CheckpointError(f"{path}: the checkpoint header is damaged: {e}") from None
    except RecursionError:
        raise CheckpointError(f"{path}: the checkpoint header is nested too deeply to read "
                              f"(file damaged or edited)") from None
    found = header.get("format") if isinstance(header, dict) else header
    if found != FORMAT:
        family, _, version = FORMAT.rpartition("/")
        if isinstance(found, str) and found.startswith(family + "/"):
            raise CheckpointError(f"{path}: checkpoint format {one_line(repr(found))}, "
                                  f"written by another version of tinygrad_cnn; this one "
                                  f"reads version {version} ({FORMAT}) only")
        raise CheckpointError(f"{path}: unknown checkpoint format {one_line(repr(found))}; "
                              f"expected {FORMAT}")
    if not isinstance(header.get("tree"), dict):
        raise CheckpointError(f"{path}: the checkpoint header has no 'tree' entry holding a "
                              f"dict (file damaged or edited)")
    try:
        return _join(header["tree"], members, path)
    except (TypeError, AttributeError) as e:
        raise CheckpointError(f"{path}: the checkpoint header is damaged: {e}") from None
    except RecursionError:
        raise CheckpointError(f"{path}: the checkpoint header is nested too deeply to read "
                              f"(file damaged or edited)") from None
