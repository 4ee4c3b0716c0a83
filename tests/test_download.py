"""IDX files and the downloader, run for real against a local HTTP server (never the internet)."""
import dataclasses
import errno
import gzip
import hashlib
import http.server
import math
import os
import re
import socket
import stat
import sys
import threading
import tracemalloc
import zlib

import numpy as np
import pytest

from tinygrad_cnn.data import (
    ChecksumError, DownloadError, IdxError, data_root, fetch, load_dataset, load_fashion_mnist,
    load_mnist, read_idx, write_idx,
)
from tinygrad_cnn.data import download
from tinygrad_cnn.data.download import RemoteDataset, RemoteFile
from tinygrad_cnn.data.idx import parse_idx

SHIPPED = dict(download.DATASETS)  # before any fixture replaces the mirrors
N_TRAIN, N_TEST = 20, 7
FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def idx_bytes(array, code, compress=True):
    array = np.asarray(array)
    raw = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    raw += array.astype(array.dtype.newbyteorder(">")).tobytes()
    return gzip.compress(raw, mtime=0) if compress else raw


def make_archives(seed=0):
    """Small MNIST-shaped archives: file name -> gzipped IDX bytes, and the arrays."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (N_TRAIN, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": rng.integers(0, 10, N_TRAIN, dtype=np.uint8),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (N_TEST, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, N_TEST, dtype=np.uint8),
    }
    return {name: idx_bytes(a, 0x08) for name, a in arrays.items()}, arrays


def table_for(archives, mirrors, directory="mnist", title="MNIST"):
    files = tuple(RemoteFile(name, sha256=hashlib.sha256(b).hexdigest(),
                             md5=hashlib.md5(b).hexdigest(), size=len(b))
                  for name, b in archives.items())
    return RemoteDataset(directory=directory, title=title, mirrors=tuple(mirrors), files=files)


# ---- the local server -----------------------------------------------------------------
class Server:
    """Serves ``routes`` (URL path -> bytes, or an int HTTP status) and logs every request."""

    def __init__(self):
        self.routes, self.log = {}, []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            timeout = 5  # a stuck client cannot hold the server thread

            def do_GET(self):
                owner.log.append(self.path)
                body = owner.routes.get(self.path, 404)
                if isinstance(body, int):
                    self.send_error(body)
                    return
                # (length, body) routes announce a length of their choosing,
                # None for none (HTTP/1.0: the body ends when the server closes).
                length, body = body if isinstance(body, tuple) else (len(body), body)
                self.send_response(200)
                if length is not None:
                    self.send_header("Content-Length", str(length))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def mirror(self, prefix, archives=None):
        """Publish ``archives`` under ``/prefix/`` and return that mirror's base URL."""
        for name, body in (archives or {}).items():
            self.routes[f"/{prefix}/{name}"] = body
        return f"{self.url}/{prefix}/"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture
def closed_port_url():
    """A URL on a port nothing listens on: connections are refused."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}/mnist/"


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Every test gets its own data root; the user's real cache is never touched.

    The shipped tables lose their (real, internet) mirrors too, so a test that
    forgot to install its own table fails instead of going online.
    """
    root = tmp_path / "cache"
    monkeypatch.setenv("TINYGRAD_CNN_DATA", str(root))
    for key, table in list(download.DATASETS.items()):
        monkeypatch.setitem(download.DATASETS, key, dataclasses.replace(table, mirrors=()))
    return root


def use_table(monkeypatch, table, key="mnist"):
    monkeypatch.setitem(download.DATASETS, key, table)


def leftovers(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".part")) \
        if directory.exists() else []


# ---- downloading ------------------------------------------------------------------
def test_download_verify_and_load(server, monkeypatch, private_cache):
    archives, arrays = make_archives()
    use_table(monkeypatch, table_for(archives, [server.mirror("a", archives)]))
    x, y = load_mnist("train", progress=False)
    assert x.shape == (N_TRAIN, 1, 28, 28) and x.dtype == np.float32
    assert y.dtype == np.int64
    np.testing.assert_array_equal(x[:, 0], arrays["train-images-idx3-ubyte.gz"] / np.float32(255))
    np.testing.assert_array_equal(y, arrays["train-labels-idx1-ubyte.gz"])
    directory = private_cache / "mnist"
    assert sorted(os.listdir(directory)) == sorted(FILES[:2])  # only what was asked, no temp files
    xt, _ = load_dataset("mnist", "test", progress=False)
    assert xt.shape == (N_TEST, 1, 28, 28)


def test_cached_files_are_not_downloaded_again(server, monkeypatch):
    archives, _ = make_archives()
    use_table(monkeypatch, table_for(archives, [server.mirror("a", archives)]))
    first = load_mnist("train", progress=False)
    requests = len(server.log)
    assert requests == 2
    second = load_mnist("train", progress=False)
    assert len(server.log) == requests
    np.testing.assert_array_equal(first[0], second[0])


def test_failover_past_refused_and_404_mirrors(server, monkeypatch, closed_port_url):
    archives, _ = make_archives()
    mirrors = [closed_port_url, server.mirror("empty"), server.mirror("good", archives)]
    use_table(monkeypatch, table_for(archives, mirrors))
    paths = fetch("mnist", files=["t10k-labels-idx1-ubyte.gz"], progress=False)
    assert paths["t10k-labels-idx1-ubyte.gz"].read_bytes() == archives["t10k-labels-idx1-ubyte.gz"]
    assert server.log == ["/empty/t10k-labels-idx1-ubyte.gz", "/good/t10k-labels-idx1-ubyte.gz"]


def test_a_mirror_that_does_not_answer_is_tried_once_per_fetch(
        server, monkeypatch, closed_port_url, capsys):
    """Each attempt is announced; a mirror that refused (or timed out) for one file is
    skipped for the others, instead of being waited on again for each; one that
    answered 404 for one file is still asked for the next."""
    archives, _ = make_archives()
    mirrors = [closed_port_url, server.mirror("empty"), server.mirror("good", archives)]
    use_table(monkeypatch, table_for(archives, mirrors))
    fetch("mnist", progress=False)
    err = capsys.readouterr().err
    assert err.count(f"from {closed_port_url}") == 1
    assert err.count("from " + server.mirror("empty")) == len(FILES)
    assert len(server.log) == 2 * len(FILES)


def test_corrupt_file_is_rejected_and_the_next_mirror_used(server, monkeypatch, private_cache):
    archives, _ = make_archives()
    corrupt = {name: b[:-1] + bytes([b[-1] ^ 0xFF]) for name, b in archives.items()}  # same size
    good = server.mirror("good", archives)
    table = table_for(archives, [server.mirror("bad", corrupt), good])
    use_table(monkeypatch, table)
    name = "train-labels-idx1-ubyte.gz"
    assert fetch("mnist", files=[name], progress=False)[name].read_bytes() == archives[name]

    # With only the corrupt mirror, nothing is left behind in the cache.
    other = "t10k-labels-idx1-ubyte.gz"
    use_table(monkeypatch, table_for(archives, [server.mirror("bad")]))
    pattern = r"sha256 of http\S+/bad/t10k-labels\S+ is [0-9a-f]{64}, expected [0-9a-f]{64}"
    with pytest.raises(DownloadError, match=pattern):
        fetch("mnist", files=[other], progress=False)
    directory = private_cache / "mnist"
    assert not (directory / other).exists() and leftovers(directory) == []


DIGESTS = {   # the digests a custom table gives: each one alone must reject a corrupt file
    "sha256 only": lambda f: dataclasses.replace(f, md5=None),
    "md5 only": lambda f: dataclasses.replace(f, sha256=None),
    "upper-case hex": lambda f: dataclasses.replace(f, sha256=f.sha256.upper(),
                                                    md5=f.md5.upper()),
}


@pytest.mark.parametrize("edit", list(DIGESTS))
def test_each_published_digest_is_checked(server, monkeypatch, private_cache, edit):
    archives, _ = make_archives()
    name = FILES[3]
    corrupt = archives[name][:-1] + bytes([archives[name][-1] ^ 0xFF])   # same size
    table = table_for(archives, [server.mirror("bad", {name: corrupt}),
                                 server.mirror("good", archives)])
    use_table(monkeypatch, dataclasses.replace(
        table, files=tuple(DIGESTS[edit](f) for f in table.files)))
    path = fetch("mnist", files=[name], progress=False)[name]
    assert path.read_bytes() == archives[name]
    assert server.log == ["/bad/" + name, "/good/" + name]
    path.write_bytes(corrupt)                      # a damaged copy in the cache
    with pytest.raises(ChecksumError, match="load with download=True"):
        fetch("mnist", files=[name], download=False)


@pytest.mark.parametrize("serve, known_size, match", [
    (lambda b: b[:-10], True, r"announces \d+ bytes, expected \d+"),
    (lambda b: b + b"extra", True, r"announces \d+ bytes, expected \d+"),
    (lambda b: (None, b[:-10]), True, r"sent \d+ bytes, expected \d+"),
    (lambda b: (None, b + b"x" * 100_000), True, r"sent more than the expected \d+ bytes"),
    # The connection drops mid-body (and no size is known to catch it earlier):
    (lambda b: (len(b), b[:-10]), False, r"connection closed after \d+ of \d+ bytes"),
])
def test_wrong_size_is_rejected(server, monkeypatch, private_cache, serve, known_size, match):
    archives, _ = make_archives()
    name = "train-labels-idx1-ubyte.gz"
    table = table_for(archives, [server.mirror("a", {name: serve(archives[name])})])
    if not known_size:
        table = RemoteDataset(table.directory, table.title, table.mirrors,
                              tuple(RemoteFile(f.name, f.sha256, f.md5) for f in table.files))
    use_table(monkeypatch, table)
    with pytest.raises(DownloadError, match=match):
        fetch("mnist", files=[name], progress=False)
    # Nothing is left behind, not even the directories made for the download.
    assert not private_cache.exists()


def test_all_mirrors_failing_says_where_to_put_the_files(server, monkeypatch, closed_port_url,
                                                         private_cache):
    archives, _ = make_archives()
    mirrors = [closed_port_url, server.mirror("missing")]
    use_table(monkeypatch, table_for(archives, mirrors))
    with pytest.raises(DownloadError) as info:
        load_mnist("train", progress=False)
    message = str(info.value)
    assert f"{closed_port_url}train-images-idx3-ubyte.gz: cannot connect" in message
    assert f"{mirrors[1]}train-images-idx3-ubyte.gz: HTTP 404" in message
    assert str(private_cache / "mnist") + os.sep in message
    for name in FILES[:2]:  # the split's files, with their checksums
        assert re.search(re.escape(name) + r"\s+sha256 [0-9a-f]{64}", message)
    assert "TINYGRAD_CNN_DATA" in message and "--data-dir" in message
    assert leftovers(private_cache / "mnist") == []


def test_every_failed_file_is_named_in_one_error(server, monkeypatch, private_cache):
    archives, _ = make_archives()
    present = {name: archives[name] for name in FILES[1:3]}  # the mirror lacks two files
    use_table(monkeypatch, table_for(archives, [server.mirror("a", present)]))
    with pytest.raises(DownloadError) as info:
        fetch("mnist", progress=False)
    message = str(info.value)
    for name in (FILES[0], FILES[3]):
        assert f"could not download {name}" in message
    # Only the failed files are listed to be placed by hand; the others were downloaded.
    listed = re.findall(r"^    (\S+)\s+sha256 [0-9a-f]{64}$", message, re.M)
    assert listed == [FILES[0], FILES[3]]
    assert sorted(os.listdir(private_cache / "mnist")) == sorted(FILES[1:3])


def test_missing_files_without_download_are_all_named(monkeypatch, private_cache):
    archives, _ = make_archives()
    use_table(monkeypatch, table_for(archives, []))
    with pytest.raises(FileNotFoundError, match="4 file") as info:
        fetch("mnist", download=False)
    assert re.findall(r"^    (\S+)\s+sha256 ", str(info.value), re.M) == list(FILES)
    # The directory to put them in does not exist yet: the user is told to create it.
    assert re.search(r"^    \S+mnist/   \(does not exist yet: create it first\)$",
                     str(info.value), re.M)
    assert not private_cache.exists()


def test_download_false_never_touches_the_network(server, monkeypatch, private_cache):
    archives, _ = make_archives()
    use_table(monkeypatch, table_for(archives, [server.mirror("a", archives)]))
    with pytest.raises(FileNotFoundError, match="download=False") as info:
        load_mnist("test", download=False)
    assert str(private_cache / "mnist") in str(info.value)
    assert server.log == []


def test_corrupt_cached_file_is_replaced_or_reported(server, monkeypatch, private_cache, capsys):
    archives, _ = make_archives()
    use_table(monkeypatch, table_for(archives, [server.mirror("a", archives)]))
    name = "t10k-labels-idx1-ubyte.gz"
    path = private_cache / "mnist" / name
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not the file")
    with pytest.raises(ChecksumError, match="load with download=True"):
        fetch("mnist", files=[name], download=False)
    assert server.log == []
    fetch("mnist", files=[name], progress=False)
    assert path.read_bytes() == archives[name]
    assert "fails verification" in capsys.readouterr().err


def test_corrupt_and_missing_files_without_download_are_named_in_one_error(
        monkeypatch, private_cache):
    """A damaged file used to hide the missing ones until it was fixed; and the error
    said "allow a download" without saying how."""
    archives, _ = make_archives()
    use_table(monkeypatch, table_for(archives, []))
    name = FILES[0]
    path = private_cache / "mnist" / name
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not the file")
    (private_cache / "mnist" / FILES[1]).write_bytes(archives[FILES[1]])   # a good one
    with pytest.raises(ChecksumError) as info:
        fetch("mnist", download=False)
    message = str(info.value)
    actual, expected = hashlib.sha256(b"not the file").hexdigest(), \
        hashlib.sha256(archives[name]).hexdigest()
    assert f"sha256 of {path} is {actual}, expected {expected}" in message
    assert f"and 2 file(s) are missing: {FILES[2]}, {FILES[3]}." in message
    assert "load with download=True (the default), which replaces a corrupt file" in message
    # Where to put each file that is not usable, the good one left out.
    listed = re.findall(r"^    (\S+)\s+sha256 [0-9a-f]{64}$", message, re.M)
    assert listed == [FILES[0], FILES[2], FILES[3]]
    assert path.read_bytes() == b"not the file"


def test_a_corrupt_cached_file_that_cannot_be_downloaded_again_is_named_in_the_error(
        monkeypatch, private_cache, closed_port_url):
    """Offline, the error used to say only that the download failed, not that the file in
    the cache (which is kept: it may have been put there by hand) fails verification."""
    archives, _ = make_archives()
    use_table(monkeypatch, table_for(archives, [closed_port_url]))
    name = FILES[3]
    path = private_cache / "mnist" / name
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not the file")
    with pytest.raises(DownloadError) as info:
        fetch("mnist", files=[name], progress=False)
    message = str(info.value)
    actual, expected = hashlib.sha256(b"not the file").hexdigest(), \
        hashlib.sha256(archives[name]).hexdigest()
    assert f"could not download {name}; every mirror failed" in message
    assert (f"The copy in the cache fails verification (kept until a verified copy replaces "
            f"it): sha256 of {path} is {actual}, expected {expected}") in message
    assert re.search(rf"^    {re.escape(name)}\s+sha256 {expected}$", message, re.M)
    assert path.read_bytes() == b"not the file"


def test_data_dir_argument_wins_over_the_environment(server, monkeypatch, tmp_path,
                                                     private_cache):
    archives, _ = make_archives()
    use_table(monkeypatch, table_for(archives, [server.mirror("a", archives)]))
    assert data_root() == private_cache
    elsewhere = tmp_path / "elsewhere"
    load_mnist("test", data_dir=elsewhere, progress=False)
    assert sorted(os.listdir(elsewhere / "mnist")) == sorted(FILES[2:])
    assert not private_cache.exists()


@pytest.mark.parametrize("env, data_dir, message", [
    ("{file}", None, "TINYGRAD_CNN_DATA='{file}' (environment variable): expected a directory "
                     "for the data files (it is created if missing), but {file} is a file"),
    ("{file}/sub", None, "TINYGRAD_CNN_DATA='{file}/sub' (environment variable): expected a "
                         "directory for the data files (it is created if missing), but "
                         "{file}/sub is under {file}, a file"),
    (None, "{file}", "data_dir='{file}': expected a directory for the data files"),
])
def test_a_data_root_that_is_a_file_is_named_with_where_it_came_from(monkeypatch, tmp_path,
                                                                     env, data_dir, message):
    """Not "[Errno 20] Not a directory: 'digit.npy/mnist'" from deep inside a download."""
    file = tmp_path / "digit.npy"
    file.write_bytes(b"an image")
    if env is not None:
        monkeypatch.setenv("TINYGRAD_CNN_DATA", env.format(file=file))
    with pytest.raises(NotADirectoryError) as info:
        load_mnist("test", data_dir=data_dir and data_dir.format(file=file), progress=False)
    assert str(info.value).startswith(message.format(file=file))
    assert file.read_bytes() == b"an image"


def test_fashion_mnist_has_its_own_directory(server, monkeypatch, private_cache):
    archives, arrays = make_archives(seed=1)
    table = table_for(archives, [server.mirror("f", archives)], "fashion_mnist", "Fashion-MNIST")
    use_table(monkeypatch, table, key="fashion_mnist")
    x, y = load_fashion_mnist("test", progress=False)
    assert x.shape == (N_TEST, 1, 28, 28)
    np.testing.assert_array_equal(y, arrays["t10k-labels-idx1-ubyte.gz"])
    assert sorted(os.listdir(private_cache / "fashion_mnist")) == sorted(FILES[2:])


IMAGES, LABELS = FILES[:2]
NOT_MNIST = {   # verified files that are still not an MNIST split: (file -> new IDX bytes, error)
    "counts differ": (lambda a: {LABELS: idx_bytes(a[LABELS][:-1], 0x08)},
                      r"train-images\S+ has 20 images but \S+train-labels\S+ has 19 labels"),
    "label 10": (lambda a: {LABELS: idx_bytes(np.r_[a[LABELS][:-1], 10].astype(np.uint8), 0x08)},
                 r"train-labels\S+: labels must be 0..9, found 10"),
    "int16 images": (lambda a: {IMAGES: idx_bytes(a[IMAGES].astype(np.int16), 0x0B)},
                     r"train-images\S+: expected uint8 images of shape \(N, H, W\), got int16"),
    "2-d labels": (lambda a: {LABELS: idx_bytes(a[LABELS].reshape(-1, 1), 0x08)},
                   r"train-labels\S+: expected uint8 labels of shape \(N,\)"),
}


@pytest.mark.parametrize("case", list(NOT_MNIST))
def test_files_that_are_not_an_mnist_split_are_refused_naming_them(server, monkeypatch, case):
    archives, arrays = make_archives()
    edit, match = NOT_MNIST[case]
    archives = {**archives, **edit(arrays)}
    use_table(monkeypatch, table_for(archives, [server.mirror("a", archives)]))
    with pytest.raises(ValueError, match=match):
        load_mnist("train", progress=False)


def test_text_progress_bar_without_tqdm(server, monkeypatch, capsys):
    archives, _ = make_archives()
    use_table(monkeypatch, table_for(archives, [server.mirror("a", archives)]))
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm -> ImportError
    fetch("mnist", files=["train-images-idx3-ubyte.gz"])
    err = capsys.readouterr().err
    assert "train-images-idx3-ubyte.gz: [" in err and "100%" in err


class FailingWrites:
    """A file object whose writes fail as on a full disk."""

    def __init__(self, f):
        self.f = f

    def write(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name):
        return getattr(self.f, name)


@pytest.mark.parametrize("where", ["write", "rename"])
def test_a_local_disk_error_is_raised_at_once_and_not_blamed_on_the_mirrors(
        server, monkeypatch, private_cache, capsys, where):
    """Disk full (or no permission) while writing or renaming the file: one error naming
    the local file, no other mirror tried, and no mirror marked as not answering."""
    archives, _ = make_archives()
    use_table(monkeypatch, table_for(archives, [server.mirror("a", archives),
                                                server.mirror("b", archives)]))
    if where == "write":
        monkeypatch.setattr(download, "open", lambda path, mode="r": FailingWrites(
            open(path, mode)), raising=False)
    else:
        def no_room(src, dst):
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr(download.os, "replace", no_room)
    with pytest.raises(download.CacheWriteError) as info:
        fetch("mnist", progress=False)
    message = str(info.value)
    assert str(private_cache / "mnist") in message and "No space left on device" in message
    assert "mirror" in message and "every mirror failed" not in message
    assert "did not answer" not in message
    assert server.log == ["/a/" + FILES[0]]  # not retried elsewhere, no further files
    assert capsys.readouterr().err.count("downloading") == 1
    assert not private_cache.exists()   # no temp file, no directory made for nothing


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_downloaded_files_get_the_umask_mode_like_any_new_file(server, monkeypatch,
                                                               private_cache, mask):
    """Not mkstemp's 0600: a shared cache must be readable by whom the umask allows."""
    archives, _ = make_archives()
    use_table(monkeypatch, table_for(archives, [server.mirror("a", archives)]))
    old = os.umask(mask)
    try:
        path = fetch("mnist", files=[FILES[3]], progress=False)[FILES[3]]
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~mask


def test_the_real_tables_are_complete():
    """The shipped mirrors and checksums are well formed (checked offline)."""
    for key, table in SHIPPED.items():
        assert [f.name for f in table.files] == list(FILES)
        assert table.mirrors and all(m.startswith(("https://", "http://")) and m.endswith("/")
                                     for m in table.mirrors)
        for f in table.files:
            assert re.fullmatch("[0-9a-f]{64}", f.sha256) and re.fullmatch("[0-9a-f]{32}", f.md5)
            assert f.size > 0


# ---- IDX files --------------------------------------------------------------------
@pytest.mark.parametrize("dtype, code", [
    (np.uint8, 0x08), (np.int8, 0x09), (np.int16, 0x0B), (np.int32, 0x0C),
    (np.float32, 0x0D), (np.float64, 0x0E),
])
def test_read_idx_types_big_endian(tmp_path, dtype, code):
    values = (np.arange(24).reshape(2, 3, 4) - 7).astype(dtype)
    path = tmp_path / "a.idx"
    path.write_bytes(idx_bytes(values, code, compress=False))
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype).newbyteorder("=") and out.flags.writeable
    np.testing.assert_array_equal(out, values)


def test_gzip_is_detected_by_content_not_name(tmp_path):
    values = np.arange(6, dtype=np.uint8).reshape(2, 3)
    (tmp_path / "plain.gz").write_bytes(idx_bytes(values, 0x08, compress=False))
    (tmp_path / "packed.idx").write_bytes(idx_bytes(values, 0x08, compress=True))
    for name in ("plain.gz", "packed.idx"):
        np.testing.assert_array_equal(read_idx(tmp_path / name), values)


def test_write_idx_round_trip(tmp_path):
    values = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
    path = write_idx(tmp_path / "x-idx2.gz", values)
    assert path.read_bytes()[:2] == b"\x1f\x8b"
    # the IDX bytes themselves, in a gzip stream with MTIME 0: the same array, the same file
    assert gzip.decompress(path.read_bytes()) == idx_bytes(values, 0x0D, compress=False)
    assert path.read_bytes()[4:8] == bytes(4)
    np.testing.assert_array_equal(read_idx(path), values)
    with pytest.raises(TypeError, match="no IDX type code"):
        write_idx(tmp_path / "bad", np.zeros(3, np.uint32))


GOOD = idx_bytes(np.zeros((60000, 28, 28), np.uint8)[:2], 0x08, compress=False)  # 2x28x28


@pytest.mark.parametrize("data, match", [
    (GOOD[:1000], "truncated: expected 1584 bytes for 2x28x28 uint8, got 1000"),
    (GOOD + b"\0", "trailing bytes: expected 1584 bytes for 2x28x28 uint8, got 1585"),
    (b"\x1f\x8c" + GOOD[2:], "not an IDX file: magic number starts with bytes 1f 8c 08 03"),
    (b"\0\0\x07\x01" + GOOD[4:], "unknown IDX type code 0x07"),
    (gzip.compress(b"\0\0\x07\x01" + GOOD[4:]), "unknown IDX type code 0x07"),   # gzipped
    (GOOD[:3], "too short for an IDX header"),
    (GOOD[:9], "header says 3 dimensions, which needs 16 header bytes"),
    (gzip.compress(GOOD)[:-20], "corrupt or truncated gzip data"),
])
def test_read_idx_errors_name_the_file_and_problem(tmp_path, data, match):
    path = tmp_path / "broken-idx3-ubyte.gz"
    path.write_bytes(data)
    with pytest.raises(IdxError, match=re.escape(str(path)) + ".*" + re.escape(match)):
        read_idx(path)


@pytest.mark.parametrize("dims", [[2**32 - 1] * 2, [60000, 28, 28]])
def test_a_header_declaring_more_than_gzip_can_expand_to_is_refused_unexpanded(tmp_path, dims):
    """A 1 MB gzip file inflates to 1 GB at most (deflate expands 1032-fold at most):
    a header declaring more is refused before inflating the zeros that follow it."""
    path = tmp_path / "bomb-idx2-ubyte.gz"
    with gzip.open(path, "wb", 9) as f:
        f.write(bytes([0, 0, 8, len(dims)]) + np.asarray(dims, ">u4").tobytes())
        f.write(bytes(16 << 20))
    size = path.stat().st_size
    declared = 4 + 4 * len(dims) + math.prod(dims)
    tracemalloc.start()
    try:
        with pytest.raises(IdxError, match=re.escape(
                f"bomb-idx2-ubyte.gz: the header declares {'x'.join(map(str, dims))} uint8 "
                f"({declared} bytes), more than the {size} bytes of gzip data can expand to "
                f"(at most 1032 times as many)")):
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20   # the 16 MB of zeros stay compressed


def _deflated_at_the_limit(prefix, runs):
    """A gzip file of ``prefix`` coded as literals, then ``runs`` runs of 258 copies of
    its last byte, each run coded in two bits (length 258 and distance 1, each a 1-bit
    Huffman code): deflate's largest expansion, 1032-fold."""
    fields = []   # (value, width) in stream order

    def code(value, width):   # Huffman codes go most significant bit first
        fields.append((int(f"{value:0{width}b}"[::-1], 2), width))

    fields += [(0, 1), (1, 2)]                    # a block of fixed codes, not the last
    for byte in prefix:
        if byte < 144:
            code(0x30 + byte, 8)
        else:
            code(0x190 + byte - 144, 9)
    code(0, 7)                                    # its end (256)
    fields += [(1, 1), (2, 2)]                    # the last block, of dynamic codes:
    fields += [(286 - 257, 5), (0, 5), (18 - 4, 4)]   # 286 lengths, 1 distance, 18 lengths
    # Code-length codes, in the order the format gives: symbols 1 ("0") and 18 ("1").
    fields += [(1 if s in (1, 18) else 0, 3)
               for s in (16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1)]
    # The code lengths, each a code-length symbol: 18 ("1", then 7 bits) is a run of
    # 11-138 zeros, 1 ("0") a length of 1.
    fields += [(1, 1), (138 - 11, 7), (1, 1), (118 - 11, 7)]   # literals 0-255: unused
    fields.append((0, 1))                         # 256, the end: length 1, code "0"
    fields += [(1, 1), (28 - 11, 7)]              # 257-284: unused
    fields.append((0, 1))                         # 285, length 258: length 1, code "1"
    fields.append((0, 1))                         # distance code 0 (distance 1): length 1
    fields.append((int("01" * runs, 2), 2 * runs))    # runs times 285 and distance 1
    fields.append((0, 1))                         # the end (256)
    bits, count = 0, 0
    for value, width in fields:   # least significant bit first
        bits |= value << count
        count += width
    data = prefix + prefix[-1:] * (258 * runs)
    return (b"\x1f\x8b\x08\0\0\0\0\0\0\xff" + bits.to_bytes(-(-count // 8), "little")
            + zlib.crc32(data).to_bytes(4, "little") + len(data).to_bytes(4, "little"))


def test_a_file_at_deflates_largest_expansion_is_read(tmp_path):
    """The bound is deflate's own, not zlib's (which gets 1030-fold on zeros): a
    file that expands about 1031-fold, as no bound below 1032 allows, is read."""
    runs = 200_000
    n = 1 + 258 * runs
    path = tmp_path / "blank-idx1-ubyte.gz"
    path.write_bytes(_deflated_at_the_limit(bytes([0, 0, 8, 1]) + n.to_bytes(4, "big")
                                            + b"\0", runs))
    assert 8 + n > 1031 * path.stat().st_size
    labels = read_idx(path)
    assert labels.shape == (n,) and not labels.any()


def test_a_gzip_bomb_is_refused_without_expanding_it(tmp_path):
    """A 1x1 file followed by 32 MB of zeros, about 32 KB gzipped: the reader
    stops one byte past the declared size instead of inflating it all."""
    path = tmp_path / "bomb-idx2-ubyte.gz"
    with gzip.open(path, "wb", 9) as f:
        f.write(bytes([0, 0, 8, 2]) + np.asarray([1, 1], ">u4").tobytes() + b"\7")
        for _ in range(32):
            f.write(bytes(1 << 20))
    tracemalloc.start()
    try:
        with pytest.raises(IdxError, match="trailing bytes: expected 13 bytes for 1x1 uint8, "
                                           "got 14"):
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20  # the whole expansion would be 32 MB


@pytest.mark.parametrize("dims, data, match", [
    # A zero dimension passes the length check however large the others are.
    ([0, 2**32 - 1, 2**32 - 1], b"",
     r"dimensions 0x4294967295x4294967295 cannot be represented as a NumPy array \(array is "
     r"too big"),
    # 65 dimensions of 1 hold one value: the length is right, NumPy allows 64.
    ([1] * 65, b"\7", r"dimensions 1x1x.*x1 cannot be represented as a NumPy array \(maximum "
                      r"supported dimension .* 65\)"),
], ids=["zero beside huge", "65 dimensions"])
def test_dimensions_numpy_cannot_represent_are_an_idx_error(dims, data, match):
    header = bytes([0, 0, 8, len(dims)]) + np.asarray(dims, ">u4").tobytes()
    with pytest.raises(IdxError, match="hostile-idx3: " + match):
        parse_idx(header + data, "hostile-idx3")
    assert parse_idx(bytes([0, 0, 8, 2]) + np.asarray([0, 28], ">u4").tobytes()).shape == (0, 28)


def test_mnist_sized_error_message():
    header = bytes([0, 0, 8, 3]) + np.asarray([60000, 28, 28], ">u4").tobytes()
    with pytest.raises(IdxError, match="expected 47040016 bytes for 60000x28x28 uint8, got 1000"):
        parse_idx(header + bytes(1000 - len(header)), "train-images-idx3-ubyte")
