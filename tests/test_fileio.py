"""Atomic writes: the result is what rewriting the file in place would give."""
import os
import stat
import threading

import numpy as np
import pytest

from tinygrad_cnn import checkpoint
from tinygrad_cnn.fileio import atomic_write, check_writable

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX permissions and symlinks")


def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask():
    """Set the process umask for one test (and restore it)."""
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o755])
def test_an_existing_file_keeps_its_mode(tmp_path, mode):
    path = tmp_path / "c.npz"
    checkpoint.save(path, {"v": 1})
    os.chmod(path, mode)
    checkpoint.save(path, {"v": 2})
    assert mode_of(path) == mode and checkpoint.load(path) == {"v": 2}


def test_replacing_a_private_file_never_exposes_the_new_data(tmp_path, monkeypatch):
    """The temporary file starts private (0600) when it replaces a file, so a 0600
    file's new content is never readable by others before the rename."""
    from tinygrad_cnn import fileio
    path = tmp_path / "secret.txt"
    atomic_write(path, "old")
    os.chmod(path, 0o600)
    seen = []

    def spy(directory, name, mode):
        fd, tmp = create(directory, name, mode)
        seen.append(stat.S_IMODE(os.fstat(fd).st_mode))
        return fd, tmp
    create = fileio._create_temp
    monkeypatch.setattr(fileio, "_create_temp", spy)
    atomic_write(path, "new")
    assert seen == [0o600] and mode_of(path) == 0o600 and path.read_text() == "new"


def test_data_are_synced_renamed_in_place_and_the_rename_synced(tmp_path, monkeypatch):
    """The protocol that makes a write survive a crash: fsync the data, rename the
    temporary file (in the target's own directory: a rename across file systems is
    a copy) over the target, then fsync the directory that holds the new entry."""
    events = []
    fsync, replace = os.fsync, os.replace

    def spy_fsync(fd):
        events.append(("fsync dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file",
                       os.fstat(fd).st_ino))
        fsync(fd)

    def spy_replace(src, dst):
        events.append(("replace", os.path.dirname(src), os.path.basename(dst)))
        replace(src, dst)
    monkeypatch.setattr(os, "fsync", spy_fsync)
    monkeypatch.setattr(os, "replace", spy_replace)
    path = tmp_path / "sub" / "c.txt"
    atomic_write(path, "data")
    monkeypatch.undo()
    # The exact sequence, on purpose: an extra sync (say of a new parent directory) or a
    # switch to fdatasync is a change to the protocol and should be a visible one here.
    assert events == [("fsync file", os.stat(path).st_ino),
                      ("replace", str(tmp_path / "sub"), "c.txt"),
                      ("fsync dir", os.stat(tmp_path / "sub").st_ino)]
    assert path.read_text() == "data"


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_a_new_file_gets_the_umask_current_at_call_time(tmp_path, umask, mask):
    umask(mask)
    path = atomic_write(tmp_path / "new.txt", "hello")
    assert mode_of(path) == 0o666 & ~mask and path.read_text() == "hello"


def test_writing_to_a_symlink_replaces_its_target_and_keeps_the_link(tmp_path):
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "metrics.txt"
    target.write_text("old")
    os.chmod(target, 0o600)
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    assert atomic_write(link, "new") == link
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text() == "new" and mode_of(target) == 0o600
    assert sorted(os.listdir(tmp_path / "real")) == ["metrics.txt"]  # no temp file left


def test_a_dangling_symlink_creates_its_target(tmp_path):
    link = tmp_path / "link.txt"
    link.symlink_to(tmp_path / "later.txt")
    atomic_write(link, b"bytes")
    assert link.is_symlink() and (tmp_path / "later.txt").read_bytes() == b"bytes"


def test_a_write_protected_file_is_not_replaced(tmp_path):
    """As open(path, "wb") would, atomic_write refuses a file this process may not
    write, although the rename itself needs only the directory's permission; a file
    with no write permission bit is refused to root too (who may write anything)."""
    path = tmp_path / "best.npz"
    checkpoint.save(path, {"v": 1})
    os.chmod(path, 0o444)
    with pytest.raises(PermissionError, match="best.npz") as info:
        checkpoint.save(path, {"v": 2})
    assert info.value.filename == str(path)
    assert checkpoint.load(path) == {"v": 1} and mode_of(path) == 0o444
    assert os.listdir(tmp_path) == ["best.npz"]  # no temp file left


def test_a_name_near_the_length_limit_still_gets_a_temp_file(tmp_path):
    """The temp name adds 18 characters; for a long target name its name part is cut."""
    path = tmp_path / ("x" * 240 + ".png")
    open(path, "wb").close()
    atomic_write(path, b"data")
    long_unicode = tmp_path / ("\u00e9" * 120 + ".txt")  # 244 bytes in UTF-8
    atomic_write(long_unicode, "text")
    assert path.read_bytes() == b"data" and long_unicode.read_text() == "text"
    assert sorted(os.listdir(tmp_path)) == sorted([path.name, long_unicode.name])


def _refuse(directory, name, mode):
    raise PermissionError(13, "Permission denied", os.path.join(directory, f".{name}.01.tmp"))


def test_errors_name_the_file_asked_for_not_the_temporary_file(tmp_path, monkeypatch):
    from tinygrad_cnn import fileio
    path = tmp_path / "c.npz"
    monkeypatch.setattr(fileio, "_create_temp", _refuse)
    for write in (lambda: atomic_write(path, b"x"), lambda: fileio.check_writable(path)):
        with pytest.raises(PermissionError) as info:
            write()
        assert info.value.filename == str(path) and ".tmp" not in str(info.value)
        assert f"cannot create a file in {tmp_path}" in str(info.value)
    monkeypatch.undo()

    def disk_full(f):
        raise OSError(28, "No space left on device")
    with pytest.raises(OSError, match=r"No space left on device: '.*c\.npz'"):
        atomic_write(path, disk_full)
    assert os.listdir(tmp_path) == []     # no temporary file is left behind


def test_check_writable_leaves_nothing_behind(tmp_path):
    from tinygrad_cnn.fileio import check_writable
    check_writable(tmp_path / "new.txt")
    atomic_write(tmp_path / "old.txt", "keep")
    check_writable(tmp_path / "old.txt")
    assert os.listdir(tmp_path) == ["old.txt"] and (tmp_path / "old.txt").read_text() == "keep"
    os.chmod(tmp_path / "old.txt", 0o444)
    with pytest.raises(PermissionError, match="write-protected"):
        check_writable(tmp_path / "old.txt")


def test_a_directory_in_place_of_the_file_is_refused_up_front_as_by_the_write(tmp_path):
    from tinygrad_cnn import fileio
    (tmp_path / "out").mkdir()
    for write in (lambda: atomic_write(tmp_path / "out", b"x"),
                  lambda: fileio.check_writable(tmp_path / "out")):
        with pytest.raises(IsADirectoryError) as info:
            write()
        assert info.value.filename == str(tmp_path / "out")
    assert os.listdir(tmp_path) == ["out"] and os.listdir(tmp_path / "out") == []


@pytest.mark.parametrize("under", ["", "sub/"])
def test_a_file_in_place_of_a_directory_is_named_as_such(tmp_path, under):
    """Not mkdir's "File exists", which names the file in the way as if it were the one
    being written."""
    (tmp_path / "notes.txt").write_text("keep")
    path = tmp_path / "notes.txt" / under / "g.png"
    with pytest.raises(NotADirectoryError, match="a file stands in place of one of its "
                                                 "directories") as info:
        atomic_write(path, b"x")
    assert info.value.filename == str(path)
    assert os.listdir(tmp_path) == ["notes.txt"] and (tmp_path / "notes.txt").read_text() == "keep"


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="Linux /proc")
def test_a_directory_that_takes_no_new_files_is_named():
    with pytest.raises(OSError) as info:
        atomic_write("/proc/x.npz", b"x")
    assert info.value.filename == "/proc/x.npz" and ".tmp" not in str(info.value)


# ---- devices and pipes: written in place, never replaced ---------------------------------
def _in_thread(fn, timeout=20):
    """``fn()``'s result, from a daemon thread: a call that never returns fails the test
    (reading /dev/zero, opening a pipe nobody writes) instead of hanging the suite."""
    result = []

    def run():
        try:
            result.append((fn(), None))
        except Exception as e:   # raised again in the test's own thread
            result.append((None, e))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert result, f"the call did not return within {timeout} s"
    value, error = result[0]
    if error is not None:
        raise error
    return value


def _device_clone(tmp_path, name, minor):
    """A node of the memory device ``minor`` (3: null, 5: zero) in ``tmp_path``, so that
    a write which wrongly replaces it cannot replace the machine's own /dev/null."""
    path = tmp_path / name
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, minor))
    except (PermissionError, AttributeError, OSError) as e:
        pytest.skip(f"cannot create a device node here ({e}); needs root on Linux")
    return path


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes (POSIX)")
@pytest.mark.parametrize("write", [
    lambda p: atomic_write(p, b"\x00data"),
    lambda p: checkpoint.save(p, {"w": np.arange(3.0), "epoch": 2}),
], ids=["bytes", "checkpoint"])
def test_a_pipe_is_written_in_place_not_replaced(tmp_path, write):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    received = []
    reader.start()
    _in_thread(lambda: write(fifo))
    reader.join(20)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode), "the pipe was replaced by a file"
    assert received and received[0]
    copy = tmp_path / "copy"
    copy.write_bytes(received[0])
    if received[0].startswith(b"PK"):   # what went through the pipe is a whole checkpoint
        assert checkpoint.load(copy)["epoch"] == 2


def test_a_character_device_is_written_in_place_not_replaced(tmp_path):
    null = _device_clone(tmp_path, "null", 3)
    atomic_write(null, b"gone")
    checkpoint.save(null, {"w": np.arange(3.0)})   # zip's seeks on a device: built in memory
    assert stat.S_ISCHR(os.stat(null).st_mode), "the device was replaced by a file"
    assert sorted(os.listdir(tmp_path)) == ["null"]   # no temporary file left


def test_nothing_waits_on_a_device_that_never_ends(tmp_path):
    from tinygrad_cnn.train import checkpoint_file_problem, metrics_file_problem
    zero = _device_clone(tmp_path, "zero", 5)
    # Written in place, a device loses nothing: not refused, and not read (forever).
    assert _in_thread(lambda: metrics_file_problem(zero)) is None
    assert _in_thread(lambda: checkpoint_file_problem(zero)) is None
    with pytest.raises(checkpoint.CheckpointError, match="is not a regular file"):
        _in_thread(lambda: checkpoint.load(zero))
    from tinygrad_cnn.viz.curves import read_metrics   # tinygrad-cnn plot's reader
    with pytest.raises(ValueError, match="not a metrics file .*a device"):
        _in_thread(lambda: read_metrics(zero), timeout=5)


def _unix_socket(tmp_path):
    """A Unix socket's node, as a service leaves one (it outlives the socket)."""
    import socket
    if not hasattr(socket, "AF_UNIX"):
        pytest.skip("no Unix sockets here")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp_path / "service.sock"))
    return tmp_path / "service.sock"


def _block_device_clone(tmp_path):
    """A block device node (loop0's numbers) in ``tmp_path``; never opened here."""
    path = tmp_path / "disk"
    try:
        os.mknod(path, 0o660 | stat.S_IFBLK, os.makedev(7, 0))
    except (PermissionError, AttributeError, OSError) as e:
        pytest.skip(f"cannot create a device node here ({e}); needs root on Linux")
    return path


@pytest.mark.parametrize("make, kind, what", [
    (_unix_socket, stat.S_ISSOCK, "a socket"),
    (_block_device_clone, stat.S_ISBLK, "a block device"),
], ids=["socket", "block device"])
@pytest.mark.parametrize("write", [
    lambda p: atomic_write(p, b"x"),
    lambda p: checkpoint.save(p, {"w": np.arange(3.0)}),
    check_writable,
], ids=["bytes", "checkpoint", "check_writable"])
def test_a_socket_or_block_device_is_refused_not_replaced_by_a_file(
        tmp_path, make, kind, what, write):
    path = make(tmp_path)
    with pytest.raises(OSError, match=f"{what}: it is not replaced") as info:
        write(path)
    assert info.value.filename == str(path)
    assert kind(os.stat(path).st_mode), f"{what} was replaced by a file"
    assert os.listdir(tmp_path) == [path.name]   # no temporary file left
