"""Atomic file writes, shared by checkpoints, pictures, metrics and data files,
and a careful ``.npy`` reader, shared by checkpoints and images.

A file is written to a temporary name in the same directory, flushed,
fsynced and renamed over the target, and the directory is fsynced: a crash
at any moment leaves either the old file or the new one, never a mix.

The result looks as if the file had been rewritten in place with
``open(path, "wb")``: an existing file keeps its permission bits, a new one
gets ``0o666`` less the umask current at the time of the call, writing to
a symbolic link replaces the file it points to while the link stays, and an
existing file this process may not write to raises ``PermissionError``
(before anything is written), though the rename would be allowed.  Errors
name the file asked for, not the hidden temporary file.
:func:`check_writable` meets the same errors up front, for a program about
to work for a while before its first write.

:func:`read_npy` reads one ``.npy`` array without ever unpickling, and
checks the sizes its header declares against the bytes the file holds
before it allocates anything.
"""
from __future__ import annotations

import errno
import io
import math
import os
import secrets
import stat
import tokenize
from pathlib import Path

import numpy as np

from ._checks import one_line, shown_int

_O_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) \
    | getattr(os, "O_CLOEXEC", 0)
_MAX_NAME_PART = 200   # bytes of the target's name kept in a temp name: 200 + 18 < 255


def _create_temp(directory, name, mode, suffix=".tmp"):
    """Create a fresh file next to the target; returns ``(fd, path)``.

    ``os.open(..., mode)`` lets the kernel apply the process umask, so the
    umask is neither read (which on POSIX means setting it, a race with
    other threads) nor cached.  ``O_EXCL`` refuses an existing name.
    """
    # The temp name adds 18 characters to the target's; a target name near
    # the file system's limit (255 bytes on most) would make it too long.
    # The random part keeps a shortened name unique.
    short = name
    while len(os.fsencode(short)) > _MAX_NAME_PART:
        short = short[:-1]
    for _ in range(100):
        tmp = os.path.join(directory, f".{short}.{secrets.token_hex(6)}{suffix}")
        try:
            return os.open(tmp, _O_FLAGS, mode), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file for {name} in {directory}")


def atomic_write(path, data):
    """Write ``data`` to ``path`` atomically and return the path.

    ``data`` is bytes, a str (written as UTF-8), or a callable that writes
    into the binary file object it is given (e.g. ``lambda f: np.savez(f, ...)``).
    Missing parent directories are created.  If ``path`` is a symbolic
    link, the file it points to is replaced and the link is kept.  An
    existing file that is not writable (``os.access(path, os.W_OK)``, or no write
    permission bit set, which holds for root too)
    raises ``PermissionError`` naming the path, as ``open(path, "wb")`` would.
    A character device or pipe (:func:`is_stream`) is written in place; a
    socket or block device raises ``OSError`` naming the path.
    """
    path = Path(path)
    if is_stream(path):
        # Written in place, as open() would: a file renamed onto /dev/null (say)
        # would take the device's place.  Built in memory first: a writer that
        # seeks (zip) cannot on a pipe, and /dev/null's position is always 0.
        buffer = io.BytesIO()
        _write_data(buffer, data)
        with open(path, "wb") as f:
            f.write(buffer.getbuffer())
        return path
    target, mode = _target_of(path)
    # Replacing a file: start private and take its mode below, so data meant
    # for a 0600 file is never readable by others in between.  A new file:
    # 0666 less the umask, as open() would give it.
    fd, tmp = _create_temp_for(path, target, 0o666 if mode is None else 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            if mode is not None and hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), mode)
            _write_data(f, data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise _about_target(e, path, tmp) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)
    return path


def _write_data(f, data):
    if callable(data):
        data(f)
    else:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)


def is_stream(path):
    """Whether ``path`` is, or links to, a character device or a pipe (``/dev/null``,
    ``/dev/stdout``, a FIFO): :func:`atomic_write` writes such a file in place, it
    holds nothing a write could lose, and reading it may never end."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return False
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)


def check_writable(path):
    """Raise the ``OSError`` that :func:`atomic_write` would meet in creating ``path``,
    before any work is done; nothing is left behind.  Missing parent directories are
    not created (and not checked)."""
    path = Path(path)
    if is_stream(path):   # opened when written (a pipe's open waits for its reader)
        if not os.access(path, os.W_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return
    if not Path(os.path.realpath(path)).parent.is_dir():
        return
    target, _ = _target_of(path)   # refuses a write-protected file, as atomic_write does
    fd, tmp = _create_temp_for(path, target, 0o600)
    os.close(fd)
    os.unlink(tmp)


def _target_of(path):
    """``(target, mode)``: the file a write to ``path`` replaces (a link's target) and its
    permission bits (None for a new file); its directory is created if missing."""
    # Rename onto the resolved file: renaming onto the link itself would
    # replace the link by a regular file and leave its target stale.
    target = Path(os.path.realpath(path))
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        # A file stands where a directory of the path should be ("notes.txt/g.png"):
        # mkdir names that file, as if it were the one refused; open() would say this.
        raise NotADirectoryError(errno.ENOTDIR, f"{os.strerror(errno.ENOTDIR)} (a file "
                                 f"stands in place of one of its directories)",
                                 str(path)) from None
    if target.is_dir():   # found here, before any data is written, by check_writable too
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    try:
        st_mode = os.stat(target).st_mode
    except FileNotFoundError:
        st_mode = None
    if st_mode is not None and not stat.S_ISREG(st_mode):
        # A socket or block device (streams are written in place before this): the
        # rename would put a file in its place, where open() could not write to a
        # socket, and would overwrite a disk.
        what = ("a socket" if stat.S_ISSOCK(st_mode) else
                "a block device" if stat.S_ISBLK(st_mode) else "not a regular file")
        raise OSError(errno.ENXIO if stat.S_ISSOCK(st_mode) else errno.EINVAL,
                      f"{what}: it is not replaced by a file (written are regular files, "
                      f"character devices and pipes)", str(path))
    mode = None if st_mode is None else stat.S_IMODE(st_mode)  # keep an existing file's mode
    # The rename needs only write access to the directory, so without this
    # a file the user write-protected (a "best" checkpoint) would be replaced.
    # Its mode says so even to root, whom os.access lets write anything.
    if mode is not None and (not os.access(target, os.W_OK) or not mode & 0o222):
        raise PermissionError(errno.EACCES, "Permission denied (the file is write-protected; "
                              "it is not replaced, as open(path, 'wb') would not write it)",
                              str(path))
    return target, mode


def _create_temp_for(path, target, mode):
    """``_create_temp`` next to ``target``, its errors naming ``path``."""
    try:
        return _create_temp(target.parent, target.name, mode)
    except OSError as e:
        where = os.path.dirname(target)
        raise _about_target(e, path, e.filename, f" (cannot create a file in {where})") from None


def _about_target(error, path, tmp, detail=""):
    """``error`` retold about ``path``, the file the caller asked for, where it names
    our hidden temporary file ``tmp`` (or no file at all)."""
    if error.errno is None or error.filename not in (None, str(tmp)):
        return error
    return type(error)(error.errno, error.strerror + detail, str(path))


def fsync_dir(directory):
    """Make a rename in ``directory`` durable (where the platform allows it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# What NumPy raises for a .npy header it cannot read.  TokenError: NumPy
# retries a header it cannot parse as written by Python 2, with the tokenizer,
# which raises its own error for an unterminated one.  SyntaxError: from the
# dtype parser, for a descr such as ",f4" or ">02".  TypeError: from sorting
# the keys of a header dict holding both str and bytes keys.
# Their messages are cut to 200 characters: NumPy quotes a header it cannot
# parse whole, up to 10000 characters over several lines.
_UNREADABLE = (ValueError, EOFError, SyntaxError, TypeError, tokenize.TokenError)


def read_npy(f, size, where, error=ValueError):
    """The array of the ``.npy`` data at the position of binary file ``f``,
    of which ``size`` bytes are the ``.npy`` data; never unpickled.

    Everything the header declares is checked against the bytes the file
    holds before anything is allocated, so a crafted header (a huge header
    length, a huge shape over a tiny body) costs no memory.  Any problem
    raises ``error`` (a ``ValueError`` subclass) with a message that starts
    with ``where`` (e.g. a file name): an unreadable or truncated header, a
    shape that is not a tuple of integers >= 0, Python objects (dtype object,
    stored pickled), data longer or shorter than the shape needs, or an
    array too large for memory.  The dtype is otherwise the caller's to judge.
    """
    start = f.tell()
    damaged = f"{where} is not a readable .npy array (file damaged or edited)"
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        # 1.0 has a 2-byte header length, 2.0 and 3.0 a 4-byte one.  NumPy
        # writes 3.0 for non-ASCII field names, but reads (and writes, when
        # asked) it for any array.
        if version not in ((1, 0), (2, 0), (3, 0)):
            raise ValueError(f".npy format version {version[0]}.{version[1]} is not one "
                             f"NumPy writes (1.0, 2.0, 3.0)")
        width = 2 if version == (1, 0) else 4
        after_magic = f.tell()
        length = f.read(width)
        header_end = after_magic + width + int.from_bytes(length, "little")
        if len(length) < width or header_end - start > size:
            # Read before NumPy reads (and allocates) a header of that claimed length.
            raise ValueError(f"the header runs past the end of the {size} bytes of data "
                             f"(truncated?)")
        f.seek(after_magic)
        # 3.0 differs from 2.0 only in encoding the header as UTF-8, not Latin-1:
        # read as 2.0, a non-ASCII field name comes out garbled but of the same
        # size, and read_array below decodes it right.
        read_header = fmt.read_array_header_1_0 if width == 2 else fmt.read_array_header_2_0
        shape, _, dtype = read_header(f)
    except _UNREADABLE as e:
        raise error(f"{damaged}: {one_line(str(e), 200)}") from None
    # NumPy's header reader accepts any tuple of ints, True and -1 among them.
    if not all(type(d) is int and d >= 0 for d in shape):
        raise error(f"{where} has shape {one_line(repr(shape))} in its .npy header, which "
                    f"is not valid: expected a tuple of integers >= 0 (file damaged or edited)")
    if dtype.hasobject:
        raise error(f"{where} holds Python objects (dtype object), stored pickled; they are "
                    f"never loaded, since unpickling can run code")
    available = size - (f.tell() - start)
    claimed = math.prod(shape) * dtype.itemsize
    if claimed != available:
        # shown_int: a product of such numbers may have more digits than str() prints.
        raise error(f"{where} claims shape {one_line(str(shape))} of {dtype} "
                    f"({shown_int(claimed)} bytes) but holds {available} bytes of data (file "
                    f"damaged or edited)")
    f.seek(start)
    try:
        return fmt.read_array(f, allow_pickle=False)
    except MemoryError:   # a consistent array too large for this machine
        raise error(f"{where} ({claimed} bytes of {dtype}, shape {shape}) is too large to "
                    f"load into memory") from None
    except _UNREADABLE as e:
        raise error(f"{damaged}: {one_line(str(e), 200)}") from None
