"""Download data sets into a local cache, verified by checksum, atomically.

Files live in ``<data root>/<data set>/<file name>``.  The data root is, in
order of precedence: the ``data_dir`` argument (the CLI's ``--data-dir``),
the ``TINYGRAD_CNN_DATA`` environment variable, ``$XDG_CACHE_HOME/tinygrad_cnn``,
``~/.cache/tinygrad_cnn``.

Each file is fetched from the data set's mirrors in order until one gives
bytes whose checksums match the table in :data:`DATASETS`; the bytes go to a
temporary file in the destination directory and are moved into place with
``os.replace`` only after verification, so the cache never holds a partial
or corrupt file under the real name.  A file already in the cache is
verified and used without a download; one that fails verification is
downloaded again (as torchvision does) and replaced only by a verified copy.
Downloaded files get mode ``0o666``
less the umask, as any new file does, so a shared cache stays readable.
A mirror that fails is reported and the next one tried; a local failure
(disk full, no write permission) raises :class:`CacheWriteError` at once
naming the file, since another mirror would not help.

Checksums: every file has the SHA-256 and the MD5 published for it; both are
checked (either may be ``None`` in a custom table, and then is skipped).
Only the standard library is used (``urllib``); ``tqdm`` draws the progress
bar when installed, otherwise a plain one is written to stderr.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import socket
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..fileio import _create_temp, fsync_dir

ENV_VAR = "TINYGRAD_CNN_DATA"
_CHUNK = 1 << 16


class DownloadError(RuntimeError):
    """No mirror gave a verified copy of a file (the message says what each did)."""


class ChecksumError(DownloadError):
    """Bytes whose checksum is not the expected one."""


class CacheWriteError(DownloadError):
    """The local cache file could not be written (disk full, no permission...).

    Raised at once: other mirrors would meet the same disk, so none is tried.
    """


@dataclass(frozen=True)
class RemoteFile:
    """One file of a data set: its name, published checksums and size in bytes."""
    name: str
    sha256: str | None = None
    md5: str | None = None
    size: int | None = None


@dataclass(frozen=True)
class RemoteDataset:
    """A data set's cache sub-directory, mirrors (base URLs, tried in order) and files."""
    directory: str
    title: str
    mirrors: tuple
    files: tuple

    def file(self, name):
        for f in self.files:
            if f.name == name:
                return f
        raise KeyError(f"{self.title} has no file {name!r}; it has "
                       f"{', '.join(f.name for f in self.files)}")


# The published checksums and sizes of the original archives.  Each value
# appears identically in several independent public projects that verify
# these downloads (the MD5s are those torchvision checks; the SHA-256s those
# of TensorFlow Datasets' checksum list and others).  Either digest failing
# rejects a download.
DATASETS = {
    "mnist": RemoteDataset(
        directory="mnist",
        title="MNIST",
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        files=(
            RemoteFile("train-images-idx3-ubyte.gz",
                       sha256="440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                       md5="f68b3c2dcbeaaa9fbdd348bbdeb94873", size=9912422),
            RemoteFile("train-labels-idx1-ubyte.gz",
                       sha256="3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                       md5="d53e105ee54ea40749a09fcbcd1e9432", size=28881),
            RemoteFile("t10k-images-idx3-ubyte.gz",
                       sha256="8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                       md5="9fb629c4189551a2d022fa330f9573f3", size=1648877),
            RemoteFile("t10k-labels-idx1-ubyte.gz",
                       sha256="f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                       md5="ec29112dd5afa0611ce80d1b7f02629c", size=4542),
        ),
    ),
    "fashion_mnist": RemoteDataset(
        directory="fashion_mnist",
        title="Fashion-MNIST",
        mirrors=(
            # The S3 website endpoint serves plain HTTP only; the checksums
            # are what make that safe.
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        ),
        files=(
            RemoteFile("train-images-idx3-ubyte.gz",
                       sha256="08dc20ab1689590a0bcd66e874647b6ee8464e2d501b5a3f1f78831db19a3fdc",
                       md5="8d4fb7e6c68d591d4c3dfef9ec88bf0d", size=26421880),
            RemoteFile("train-labels-idx1-ubyte.gz",
                       sha256="b0197879cbda89f3dc7b894f9fd52b858e68ea4182b6947c9d8c2b67e5f18dcc",
                       md5="25c81989df183df01b3e8a0aad5dffbe", size=29515),
            RemoteFile("t10k-images-idx3-ubyte.gz",
                       sha256="78dcbbfb5a27efaf1b6c1d616caca68560be8766c5bffcb2791df9273a534229",
                       md5="bef4ecab320f06d8554ea6380940ec79", size=4422102),
            RemoteFile("t10k-labels-idx1-ubyte.gz",
                       sha256="42bd18137a62d5998cdeae52bf3a0676ac6b706f5cf8439b47bb5b151ae3dccf",
                       md5="bb300cfdad3c16e7a12a480ee83cd310", size=5148),
        ),
    ),
}


# ---- where files go --------------------------------------------------------------
def data_root(data_dir=None):
    """The root of the data cache (see the module docstring for the order).

    A root that is a file, or lies under one, raises ``NotADirectoryError``
    naming where the path came from (``data_dir`` or the environment
    variable); a missing directory is fine (a download creates it).
    """
    if data_dir is not None:
        return check_directory(Path(data_dir).expanduser(), f"data_dir={os.fspath(data_dir)!r}")
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return check_directory(Path(env).expanduser(), f"{ENV_VAR}={env!r} (environment variable)")
    cache = os.environ.get("XDG_CACHE_HOME", "").strip() or Path.home() / ".cache"
    return Path(cache).expanduser() / "tinygrad_cnn"


def file_in_the_way(path):
    """The file at ``path`` or at the nearest of its parents that exists, if that is
    not a directory (so no directory can be made there); else None."""
    for p in (Path(path), *Path(path).parents):
        if p.exists():
            return None if p.is_dir() else p
    return None


def check_directory(root, source):
    """``root``, unless a file stands where it or its parent should be a directory: then
    a ``NotADirectoryError`` naming ``source``, where the path came from."""
    blocker = file_in_the_way(root)
    if blocker is not None:
        where = "is a file" if blocker == root else f"is under {blocker}, a file"
        raise NotADirectoryError(f"{source}: expected a directory for the data files (it "
                                 f"is created if missing), but {root} {where}")
    return root


def dataset_dir(name, data_dir=None):
    """The directory that holds (or will hold) the files of data set ``name``."""
    return data_root(data_dir) / _dataset(name).directory


def _dataset(name):
    key = name.replace("-", "_").lower() if isinstance(name, str) else name
    if key not in DATASETS:
        raise KeyError(f"unknown data set {name!r}; known: {', '.join(sorted(DATASETS))}")
    return DATASETS[key]


# ---- checksums -------------------------------------------------------------------
def _hashers(spec):
    return {algo: hashlib.new(algo) for algo in ("sha256", "md5") if getattr(spec, algo)}


def _check_digests(hashers, spec, source):
    for algo, h in hashers.items():
        expected = getattr(spec, algo).lower()
        if h.hexdigest() != expected:
            raise ChecksumError(f"{algo} of {source} is {h.hexdigest()}, expected {expected} "
                                f"(corrupt or a different file)")


def verify_file(path, spec):
    """Raise :class:`ChecksumError` unless ``path`` has ``spec``'s checksums."""
    hashers = _hashers(spec)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            for h in hashers.values():
                h.update(chunk)
    _check_digests(hashers, spec, path)


# ---- progress ---------------------------------------------------------------------
class _TextProgress:
    """A minimal progress bar on stderr, redrawn when the percentage changes."""

    def __init__(self, total, desc):
        self.total, self.desc, self.done, self._shown = total, desc, 0, None

    def update(self, n):
        self.done += n
        # Without a known total, redraw once per MiB.
        key = self.done * 100 // self.total if self.total else self.done >> 20
        if key != self._shown:
            self._shown = key
            self._draw()

    def _draw(self):
        mib = self.done / 2**20
        if self.total:
            frac = min(self.done / self.total, 1.0)
            bar = "#" * int(frac * 30)
            line = f"{self.desc}: [{bar:<30}] {frac:4.0%} {mib:.1f}/{self.total / 2**20:.1f} MiB"
        else:
            line = f"{self.desc}: {mib:.1f} MiB"
        sys.stderr.write("\r" + line)
        sys.stderr.flush()

    def close(self):
        sys.stderr.write("\n")
        sys.stderr.flush()


class _NoProgress:
    def update(self, n):
        pass

    def close(self):
        pass


def _progress_bar(total, desc, enabled):
    if not enabled:
        return _NoProgress()
    try:
        from tqdm import tqdm
    except ImportError:
        return _TextProgress(total, desc)
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                file=sys.stderr)


# ---- downloading ------------------------------------------------------------------
def _user_agent():
    from .. import __version__
    return f"tinygrad_cnn/{__version__} (+urllib)"


class _Local:
    """Turns an OSError of the local file into a :class:`CacheWriteError` naming it.

    Used around each local file operation, so that a full disk or a cache
    directory without write permission is never taken for a mirror's fault.
    """

    def __init__(self, path, action):
        self.path, self.action = path, action

    def __enter__(self):
        return self

    def __exit__(self, kind, e, tb):
        if isinstance(e, OSError):
            raise CacheWriteError(f"cannot {self.action} {self.path}: {e}; the data "
                                  f"directory must be writable and have room for the file "
                                  f"(a local problem, so no other mirror was tried)") from e
        return False


def _download_once(url, tmp, spec, timeout, progress):
    """Fetch ``url`` into the file ``tmp`` (truncated first) and verify it; raise on any problem.

    Network and server trouble raises ``URLError``/``OSError``/``HTTPException``/
    :class:`DownloadError`, the mirror's fault; trouble with the local file
    raises :class:`CacheWriteError`.
    """
    request = urllib.request.Request(url, headers={"User-Agent": _user_agent()})
    with _Local(tmp, "write"):
        f = open(tmp, "wb")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            length = resp.headers.get("Content-Length")
            length = int(length) if length and length.isdigit() else None
            if spec.size is not None and length is not None and length != spec.size:
                raise DownloadError(f"{url} announces {length} bytes, expected {spec.size}")
            hashers = _hashers(spec)
            got = 0
            bar = _progress_bar(spec.size or length, spec.name, progress)
            try:
                while chunk := resp.read(_CHUNK):
                    got += len(chunk)
                    # A wrong URL can serve an endless or huge body; stop early.
                    if spec.size is not None and got > spec.size:
                        raise DownloadError(f"{url} sent more than the expected "
                                            f"{spec.size} bytes")
                    for h in hashers.values():
                        h.update(chunk)
                    with _Local(tmp, "write"):
                        f.write(chunk)
                    bar.update(len(chunk))
            finally:
                bar.close()
        # http.client returns a short body without complaint when the
        # connection drops, so compare with the announced length ourselves.
        if length is not None and got < length:
            raise DownloadError(f"{url}: the connection closed after {got} of {length} bytes")
        if spec.size is not None and got != spec.size:
            raise DownloadError(f"{url} sent {got} bytes, expected {spec.size}")
        _check_digests(hashers, spec, url)
        with _Local(tmp, "write"):
            f.flush()
            os.fsync(f.fileno())
    finally:
        with _Local(tmp, "write"):
            f.close()


def _unreachable(e):
    """Did the mirror not answer at all (a timeout, a refused connection, no route or
    no DNS: OSErrors), rather than answer badly for this one file (an HTTP error)?"""
    if isinstance(e, urllib.error.HTTPError):
        return False
    return isinstance(e.reason if isinstance(e, urllib.error.URLError) else e, OSError)


def _describe_failure(e):
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError):
        return f"cannot connect: {e.reason}"
    if isinstance(e, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(e, DownloadError):
        return str(e)
    return f"{type(e).__name__}: {e}"


def manual_instructions(name, data_dir=None, files=None):
    """The text telling where to put a data set's files by hand."""
    ds = _dataset(name)
    files = ds.files if files is None else files
    directory = dataset_dir(name, data_dir)
    lines = [f"To install {ds.title} by hand, download these files (from any mirror or copy) "
             f"and put them, keeping the names, in", f"    {directory}{os.sep}"]
    if not os.path.isdir(directory):   # nothing was downloaded there yet
        lines[-1] += "   (does not exist yet: create it first)"
    for f in files:
        check = f"sha256 {f.sha256}" if f.sha256 else (f"md5 {f.md5}" if f.md5 else "")
        lines.append(f"    {f.name:<28} {check}".rstrip())
    lines.append(f"(or choose another data directory with --data-dir / data_dir=, or the "
                 f"{ENV_VAR} environment variable).")
    return "\n".join(lines)


def download_file(spec, dest, mirrors, timeout=60.0, progress=True, unreachable=None):
    """Fetch ``spec.name`` into ``dest`` from the first mirror that gives verified bytes.

    ``mirrors`` are base URLs (the file name is appended).  The bytes go to a
    temporary file beside ``dest`` that replaces ``dest`` only once verified.
    Each attempt is announced on stderr.  ``unreachable`` (a set) collects
    the mirrors that timed out or refused the connection; they are skipped
    from then on (a data set's other files would wait on them again).
    When every mirror fails, raises :class:`DownloadError` listing what each
    one did.  Failing to write, flush or rename the local file raises
    :class:`CacheWriteError` at once: no other mirror is tried, and no
    mirror is marked as not answering.
    """
    unreachable = set() if unreachable is None else unreachable
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Created once, outside the mirror loop, so that an unwritable directory
    # is reported as itself rather than as a failure of every mirror.  Mode
    # 0666 less the umask, as open() gives: a shared cache stays readable
    # by the users the umask allows (mkstemp's 0600 would shut them out).
    fd, tmp = _create_temp(dest.parent, dest.name, 0o666, suffix=".part")
    os.close(fd)
    failures = []
    try:
        for base in mirrors:
            url = base.rstrip("/") + "/" + spec.name
            if base in unreachable:
                failures.append(f"  - {url}: skipped (the mirror did not answer before)")
                continue
            print(f"tinygrad_cnn: downloading {spec.name} from {base} (timeout {timeout:g} s)",
                  file=sys.stderr, flush=True)
            try:
                _download_once(url, tmp, spec, timeout, progress)
            except CacheWriteError:
                raise
            except (urllib.error.URLError, http.client.HTTPException, OSError,
                    DownloadError) as e:
                # URLError covers HTTP errors and refused connections,
                # HTTPException a connection cut mid-body, OSError timeouts.
                failures.append(f"  - {url}: {_describe_failure(e)}")
                if _unreachable(e):
                    unreachable.add(base)
                continue
            with _Local(dest, "move the download into place as"):
                os.replace(tmp, dest)
            fsync_dir(dest.parent)
            return dest
    finally:
        Path(tmp).unlink(missing_ok=True)
    tried = "\n".join(failures) if failures else "  (no mirrors configured)"
    raise DownloadError(f"could not download {spec.name}; every mirror failed:\n{tried}")


def fetch(name, files=None, data_dir=None, download=True, mirrors=None, timeout=60.0,
          progress=True):
    """Make sure data set ``name``'s files are in the cache; return ``{file name: Path}``.

    ``files`` selects some of the data set's file names (default: all).
    A cached file is verified and reused; a missing or corrupt one is
    downloaded when ``download`` is true, tried on ``mirrors`` (default: the
    table's) in order, and a verified download replaces a corrupt copy (which
    is kept until then: it may be a file placed by hand).  Otherwise, or when
    every mirror fails, the error names every file that could not be had
    (not just the first), with the digests of a corrupt copy, and says
    exactly where to put them by hand.  Directories created for a download
    that gave nothing are removed again.  A :class:`CacheWriteError` (the
    cache cannot be written) stops the fetch at the first file it meets.
    """
    ds = _dataset(name)
    specs = ds.files if files is None else tuple(ds.file(f) for f in files)
    mirrors = ds.mirrors if mirrors is None else tuple(mirrors)
    directory = dataset_dir(name, data_dir)
    created = [p for p in (directory, *directory.parents) if not p.exists()]
    paths, corrupt, missing, failed = {}, [], [], []
    stale = {}   # file name -> the ChecksumError of the corrupt copy a download should replace
    unreachable = set()   # mirrors that did not answer: not tried again for the other files
    for spec in specs:
        dest = directory / spec.name
        if dest.exists():
            try:
                verify_file(dest, spec)
                paths[spec.name] = dest
                continue
            except ChecksumError as e:
                if not download:
                    corrupt.append((spec, e))
                    continue
                stale[spec.name] = e
                print(f"tinygrad_cnn: cached file fails verification, downloading it again: {e}",
                      file=sys.stderr)
        elif not download:
            missing.append(spec)
            continue
        try:
            paths[spec.name] = download_file(spec, dest, mirrors, timeout, progress,
                                             unreachable)
        except CacheWriteError:
            # The next files would meet the same disk: stop here, and leave
            # no directory made for nothing.
            _remove_empty(created)
            raise
        except DownloadError as e:
            failed.append((spec, e))
    if not (corrupt or missing or failed):
        return paths
    _remove_empty(created)
    if corrupt:
        # One error for every file that is not usable, the missing ones included.
        lines = [f"{ds.title}: {len(corrupt)} file(s) in the cache fail verification "
                 f"(download=False, so none was downloaded):"]
        lines += [f"  {e}" for _, e in corrupt]
        if missing:
            lines.append(f"and {len(missing)} file(s) are missing: "
                         f"{', '.join(s.name for s in missing)}.")
        lines.append("To fix this, load with download=True (the default), which replaces a "
                     "corrupt file with a verified download, or replace the file(s) by hand.")
        raise ChecksumError("\n".join(lines) + "\n" + manual_instructions(
            name, data_dir, [s for s, _ in corrupt] + missing))
    if missing:
        listed = ", ".join(s.name for s in missing)
        raise FileNotFoundError(f"{ds.title}: {len(missing)} file(s) missing from {directory} "
                                f"and download=False: {listed}.\n"
                                + manual_instructions(name, data_dir, missing))
    reports = []
    for spec, e in failed:
        reports.append(str(e))
        if spec.name in stale:
            reports.append(f"  The copy in the cache fails verification (kept until a verified "
                           f"copy replaces it): {stale[spec.name]}")
    raise DownloadError(f"{ds.title}: " + "\n".join(reports) + "\n"
                        + manual_instructions(name, data_dir, [s for s, _ in failed]))


def _remove_empty(directories):
    """Remove those of ``directories`` (deepest first) that are empty; keep the rest."""
    for d in directories:
        try:
            d.rmdir()
        except OSError:  # not empty, or not ours to remove: leave it
            break
