"""The bundled data sets, normalisation, and train/validation splits.

Every loader returns ``(images, labels)`` as NumPy arrays: images float32 of
shape (N, 1, H, W) scaled to [0, 1], labels int64.  Wrap them in a
:class:`~tinygrad_cnn.data.TensorDataset` for a
:class:`~tinygrad_cnn.data.DataLoader`::

    x, y = load_digits("train")
    mean, std = mean_std(x)
    loader = DataLoader(TensorDataset(normalize(x, mean, std), y), batch_size=64, shuffle=True)

- ``digits``: the 8x8 handwritten digits bundled with scikit-learn (1,797
  images, works offline).  Fixed stratified split: 1,437 train / 360 test.
- ``mnist``, ``fashion_mnist``: 28x28, 60,000 train / 10,000 test, downloaded
  on first use into the data cache (see :mod:`tinygrad_cnn.data.download`).
"""
from __future__ import annotations

import numbers

import numpy as np

from . import download as _download
from .idx import read_idx
from .loader import Dataset, Subset
from .._checks import check_int, check_seed
from ..tensor import get_rng

SPLITS = ("train", "test")

DIGITS_CLASSES = tuple(str(d) for d in range(10))
MNIST_CLASSES = DIGITS_CLASSES
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

#: The digits split: stratified by class, DIGITS_TEST_SIZE images held out,
#: chosen with ``numpy.random.default_rng(DIGITS_SPLIT_SEED)``.
DIGITS_SPLIT_SEED = 0
DIGITS_TEST_SIZE = 360

# tinygrad_cnn is installed from a checkout, not from PyPI, so the hint names
# the package itself (and the checkout's extra, which also brings tqdm and matplotlib).
_EXTRAS_HINT = 'pip install scikit-learn (or, in a checkout: pip install -e ".[examples]")'


def _check_split(split):
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")


# ---- digits ----------------------------------------------------------------------
def _load_sklearn_digits():
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as e:
        raise ImportError(f"the digits data set comes with scikit-learn, which is not "
                          f"installed ({e}); install it with: {_EXTRAS_HINT}") from e
    bunch = sk_load_digits()
    return bunch.images, bunch.target


def stratified_split_indices(labels, n_test, seed):
    """``(train_idx, test_idx)``: ``n_test`` indices held out in proportion to each class.

    Each class gives ``n_test * class_count / N`` test samples, rounded by the
    largest-remainder method so the total is exactly ``n_test``; which samples
    are drawn uniformly with ``numpy.random.default_rng(seed)``.  Both index
    arrays are sorted.
    """
    labels = np.asarray(labels)
    n = labels.shape[0]
    n_test = check_int("n_test", n_test)
    if not 0 < n_test < n:
        raise ValueError(f"n_test must be between 1 and {n - 1} for {n} samples, got {n_test}")
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * n_test / n
    take = np.floor(quota).astype(np.int64)
    # Give the leftover samples to the classes with the largest remainders
    # (stable sort: ties go to the smaller class label).
    leftover = n_test - int(take.sum())
    take[np.argsort(-(quota - take), kind="stable")[:leftover]] += 1
    rng = np.random.default_rng(seed)
    test = [rng.permutation(np.flatnonzero(labels == c))[:t] for c, t in zip(classes, take)]
    test = np.sort(np.concatenate(test))
    train = np.setdiff1d(np.arange(n), test)  # sorted
    return train, test


def load_digits(split="train"):
    """The 8x8 digits bundled with scikit-learn: ``(images, labels)`` of one split.

    ``images``: float32 (N, 1, 8, 8) in [0, 1] (the raw values 0..16 / 16);
    ``labels``: int64 (N,) in 0..9.  ``split="train"`` gives 1,437 images,
    ``"test"`` the other 360; the split is fixed (see
    :func:`stratified_split_indices` with :data:`DIGITS_SPLIT_SEED`), so results
    are comparable across runs.  Needs scikit-learn (the ``examples`` extra).
    """
    _check_split(split)
    images, labels = _load_sklearn_digits()
    train, test = stratified_split_indices(labels, DIGITS_TEST_SIZE, DIGITS_SPLIT_SEED)
    idx = train if split == "train" else test
    x = (images[idx].astype(np.float32) / np.float32(16.0)).reshape(-1, 1, 8, 8)  # (N, 1, 8, 8)
    return x, labels[idx].astype(np.int64)


# ---- MNIST and Fashion-MNIST -----------------------------------------------------------
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def _load_idx_pair(name, split, data_dir, download, progress):
    _check_split(split)
    image_file, label_file = _IDX_FILES[split]
    paths = _download.fetch(name, files=(image_file, label_file), data_dir=data_dir,
                            download=download, progress=progress)
    image_path, label_path = paths[image_file], paths[label_file]
    images, labels = read_idx(image_path), read_idx(label_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"{image_path}: expected uint8 images of shape (N, H, W), got "
                         f"{images.dtype} of shape {images.shape}")
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise ValueError(f"{label_path}: expected uint8 labels of shape (N,), got "
                         f"{labels.dtype} of shape {labels.shape}")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{image_path} has {images.shape[0]} images but {label_path} has "
                         f"{labels.shape[0]} labels; the files do not belong together")
    if labels.size and labels.max() > 9:
        raise ValueError(f"{label_path}: labels must be 0..9, found {int(labels.max())}")
    n, h, w = images.shape
    x = (images.astype(np.float32) / np.float32(255.0)).reshape(n, 1, h, w)  # (N, 1, H, W)
    return x, labels.astype(np.int64)


def load_mnist(split="train", data_dir=None, download=True, progress=True):
    """MNIST handwritten digits: ``(images, labels)`` of one split.

    ``images``: float32 (N, 1, 28, 28) in [0, 1]; ``labels``: int64 (N,).
    60,000 train / 10,000 test.  The files are downloaded (verified by
    SHA-256 and MD5) into ``<data dir>/mnist/`` on first use; ``data_dir``
    defaults to ``$TINYGRAD_CNN_DATA`` or ``~/.cache/tinygrad_cnn``.  With
    ``download=False`` a missing file is an error saying where to put it.
    """
    return _load_idx_pair("mnist", split, data_dir, download, progress)


def load_fashion_mnist(split="train", data_dir=None, download=True, progress=True):
    """Fashion-MNIST (Zalando clothing images): as :func:`load_mnist`, in
    ``<data dir>/fashion_mnist/``.  Class names: :data:`FASHION_MNIST_CLASSES`."""
    return _load_idx_pair("fashion_mnist", split, data_dir, download, progress)


_LOADERS = {"digits": load_digits, "mnist": load_mnist, "fashion_mnist": load_fashion_mnist}
DATASET_NAMES = tuple(_LOADERS)
CLASSES = {"digits": DIGITS_CLASSES, "mnist": MNIST_CLASSES,
           "fashion_mnist": FASHION_MNIST_CLASSES}


def load_dataset(name, split="train", data_dir=None, download=True, progress=True):
    """Load a data set by name (``digits``, ``mnist``, ``fashion_mnist``/``fashion-mnist``).

    ``data_dir``/``download``/``progress`` are ignored for ``digits``, which
    needs no files.
    """
    key = name.replace("-", "_").lower() if isinstance(name, str) else name
    if key not in _LOADERS:
        raise ValueError(f"unknown data set {name!r}; expected one of {', '.join(DATASET_NAMES)}")
    if key == "digits":
        return load_digits(split)
    return _LOADERS[key](split, data_dir=data_dir, download=download, progress=progress)


# ---- normalisation ---------------------------------------------------------------
def mean_std(images):
    """Per-channel mean and standard deviation of (N, C, H, W) images.

    Returns two float32 arrays of shape (C,).  Compute them on the training
    split only, then :func:`normalize` every split with them.  Accumulated in
    float64 so 60,000 images lose no precision.
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"mean_std expects images of shape (N, C, H, W), got {images.shape}")
    if images.shape[0] == 0:
        raise ValueError("mean_std of an empty set of images")
    axes = (0, 2, 3)
    mean = images.mean(axis=axes, dtype=np.float64)
    std = images.std(axis=axes, dtype=np.float64)
    return mean.astype(np.float32), std.astype(np.float32)


def normalize(images, mean, std):
    """``(images - mean) / std`` per channel; ``mean``/``std`` are scalars or (C,) arrays.

    Works on NumPy arrays of shape (N, C, H, W) or (C, H, W); the result keeps
    a floating dtype of ``images`` (float32 stays float32).
    """
    images = np.asarray(images)
    if images.dtype.kind != "f":
        raise TypeError(f"normalize expects floating-point images, got {images.dtype}; "
                        f"scale them to [0, 1] first")
    stats = []
    for label, v in (("mean", mean), ("std", std)):
        v = np.asarray(v, dtype=np.float64)
        if v.ndim > 1:
            raise ValueError(f"normalize: {label} must be a scalar or a (C,) array, "
                             f"got shape {v.shape}")
        if v.ndim == 1:
            if images.ndim < 3 or v.shape[0] != images.shape[-3]:
                raise ValueError(f"normalize: {label} has {v.shape[0]} channels but images "
                                 f"of shape {images.shape} have "
                                 f"{images.shape[-3] if images.ndim >= 3 else 'no'} "
                                 f"(the channel axis is -3)")
            v = v.reshape(-1, 1, 1)  # (C, 1, 1): broadcasts over (N, C, H, W)
        stats.append(v.astype(images.dtype))
    mean, std = stats
    if np.any(std <= 0) or not np.all(np.isfinite(std)):
        raise ValueError(f"normalize: std must be positive and finite, got {std.ravel()}")
    return (images - mean) / std


# ---- splits ----------------------------------------------------------------------
def split_indices(n, val_fraction=0.1, seed=0):
    """``(train_idx, val_idx)``: a random, sorted split of ``range(n)``.

    ``round(n * val_fraction)`` indices go to validation (at least one, and
    at least one left for training).  ``seed=None`` draws from
    :func:`tinygrad_cnn.get_rng`.
    """
    n = check_int("split_indices: n", n)
    if n < 2:
        raise ValueError(f"need at least 2 samples to split, got {n!r}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be strictly between 0 and 1, got {val_fraction}")
    # (a Generator or SeedSequence: numpy.random.default_rng takes them, as it did here)
    seed = check_seed("split_indices: seed", seed, none=True,
                      also=(np.random.Generator, np.random.SeedSequence))
    n_val = min(max(int(round(n * val_fraction)), 1), n - 1)
    rng = get_rng() if seed is None else np.random.default_rng(seed)
    perm = rng.permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def train_val_split(data, val_fraction=0.1, seed=0):
    """Hold out a random ``val_fraction`` of ``data`` for validation.

    ``data`` may be:

    - an int ``n``: returns ``(train_idx, val_idx)`` index arrays;
    - a tuple/list of equally long arrays, e.g. ``(images, labels)``: returns
      ``((train arrays...), (val arrays...))`` with rows kept aligned;
    - a :class:`Dataset`: returns two :class:`Subset` views of it.

    The same ``seed`` and length always give the same split.
    """
    if isinstance(data, numbers.Integral):
        return split_indices(int(data), val_fraction, seed)
    if isinstance(data, Dataset):
        train, val = split_indices(len(data), val_fraction, seed)
        return Subset(data, train), Subset(data, val)
    if isinstance(data, (tuple, list)):
        arrays = [np.asarray(a) for a in data]
        if not arrays:
            raise ValueError("train_val_split needs at least one array")
        lengths = [a.shape[0] if a.ndim else None for a in arrays]
        if None in lengths or len(set(lengths)) != 1:
            raise ValueError(f"train_val_split: arrays must have one common length on the "
                             f"first axis, got shapes {[a.shape for a in arrays]}")
        train, val = split_indices(lengths[0], val_fraction, seed)
        return tuple(a[train] for a in arrays), tuple(a[val] for a in arrays)
    raise TypeError(f"train_val_split takes an int, a tuple of arrays or a Dataset, "
                    f"got {type(data).__name__}")
