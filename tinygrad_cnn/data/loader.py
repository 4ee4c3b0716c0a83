"""Data sets and a mini-batch loader.

A :class:`DataLoader` cuts a data set into batches and yields each batch as
a tuple of Tensors on the chosen device.  For a :class:`TensorDataset` (and
a :class:`Subset` of one) a batch is one slice or one fancy-index gather per
array, so no Python loop runs over the samples; any other
:class:`Dataset` falls back to stacking ``dataset[i]`` one sample at a time.

Shuffling is reproducible and resumable: the order of epoch ``e`` is a
permutation drawn from ``numpy.random.default_rng([seed, e])``, so it
depends only on the loader's seed and the epoch number.
``loader.state_dict()`` (seed, epoch and batch, with the batch size,
``drop_last``, ``shuffle`` and data set length they refer to) saved with a
checkpoint and given back to ``load_state_dict`` makes a resumed run see
exactly the batches an uninterrupted run would have seen, from the next
epoch or from the middle of one; a loader built with other settings is
refused rather than resumed at a position that means other samples.
"""
from __future__ import annotations

import numbers

import numpy as np

from .._checks import check_flag, check_int, check_seed, is_int
from ..backend import get_backend
from ..tensor import _SUPPORTED_KINDS, Tensor, get_rng

_SEED_BOUND = 2**63 - 1


class Dataset:
    """A sized collection of samples; subclasses define ``__len__`` and ``__getitem__``.

    ``dataset[i]`` returns one sample: a tuple of fields (e.g. ``(image,
    label)``), each an array, a Tensor or a number.  Subclasses that can
    gather many samples at once should override :meth:`get_batch`.
    """

    def __len__(self):
        raise NotImplementedError(f"{type(self).__name__} must define __len__")

    def __getitem__(self, index):
        raise NotImplementedError(f"{type(self).__name__} must define __getitem__")

    def get_batch(self, indices):
        """The samples at ``indices`` as a tuple of host arrays, one per field.

        This generic version stacks ``self[i]`` sample by sample.
        """
        samples = [_as_fields(self[int(i)]) for i in indices]
        if not samples:
            raise ValueError("get_batch needs at least one index")
        n_fields = len(samples[0])
        for i, s in zip(indices, samples):
            if len(s) != n_fields:
                raise ValueError(f"{type(self).__name__}[{int(i)}] has {len(s)} fields but "
                                 f"[{int(indices[0])}] has {n_fields}; every sample needs "
                                 f"the same fields")
        batch = []
        for k in range(n_fields):
            values = [s[k] for s in samples]
            shapes = {np.shape(v) for v in values}
            if len(shapes) > 1:
                raise ValueError(f"{type(self).__name__}: field {k} has different shapes "
                                 f"within one batch: {sorted(shapes)}; samples must agree "
                                 f"to be stacked")
            batch.append(np.stack(values))
        return tuple(batch)


def _as_fields(sample):
    """One sample -> a tuple of host arrays/scalars."""
    if not isinstance(sample, tuple):
        sample = (sample,)
    return tuple(v.numpy() if isinstance(v, Tensor) else np.asarray(v) for v in sample)


class TensorDataset(Dataset):
    """Samples are rows of equally long arrays: ``TensorDataset(images, labels)``.

    Accepts NumPy arrays, Tensors (kept on their device, cut from the graph)
    or anything ``numpy.asarray`` takes.  ``dataset[i]`` is a tuple of the
    i-th rows; batches are gathered by indexing each whole array at once.
    """

    def __init__(self, *arrays):
        if not arrays:
            raise ValueError("TensorDataset needs at least one array")
        self.arrays, self.backends = [], []
        for k, a in enumerate(arrays):
            if isinstance(a, Tensor):
                self.arrays.append(a.data)
                self.backends.append(a._backend)
            else:
                a = np.asarray(a)
                self.arrays.append(a)
                self.backends.append(None)  # host data
            if self.arrays[-1].ndim == 0:
                raise ValueError(f"TensorDataset: array {k} is 0-d; every array needs a "
                                 f"first (sample) axis")
        lengths = [int(a.shape[0]) for a in self.arrays]
        if len(set(lengths)) != 1:
            shapes = ", ".join(f"array {k}: {tuple(a.shape)}" for k, a in enumerate(self.arrays))
            raise ValueError(f"TensorDataset: arrays have different lengths {lengths} "
                             f"({shapes}); they must agree on the first axis")
        self._length = lengths[0]

    def __len__(self):
        return self._length

    def __getitem__(self, index):
        if is_int(index):
            if not -self._length <= index < self._length:
                raise IndexError(f"index {index} is out of range for a TensorDataset of "
                                 f"length {self._length}")
        elif isinstance(index, (bool, np.bool_, numbers.Number, str)) or index is None:
            # NumPy would read a bool as a mask (True: every sample, with a new axis)
            raise TypeError(f"TensorDataset indices must be ints, slices or integer "
                            f"arrays, got {index!r} ({type(index).__name__})")
        return tuple(a[index] for a in self.arrays)

    def get_batch(self, indices):
        """Index every array with ``indices`` (a slice or an integer array) at once."""
        if isinstance(indices, slice):
            return tuple(a[indices] for a in self.arrays)
        indices = np.asarray(indices)
        return tuple(a[indices] if b is None else a[b.asarray(indices)]
                     for a, b in zip(self.arrays, self.backends))


class Subset(Dataset):
    """The samples of ``dataset`` at ``indices``, in that order.

    ``indices`` are integers (negative ones count from the end), or a
    boolean mask of length ``len(dataset)`` selecting the samples where it
    is true (``Subset(ds, labels == 3)``).  Any other dtype, e.g. floats,
    or a mask of another length raises an error rather than being cast.
    """

    def __init__(self, dataset, indices):
        self.dataset = dataset
        n = len(dataset)
        self.indices = _subset_indices(indices, n)
        if self.indices.size and (self.indices.min() < -n or self.indices.max() >= n):
            raise IndexError(f"Subset indices must lie in [{-n}, {n}) for a data set of "
                             f"length {n}; got range [{self.indices.min()}, "
                             f"{self.indices.max()}]")

    def __len__(self):
        return int(self.indices.size)

    def __getitem__(self, index):
        return self.dataset[int(self.indices[index])]

    def get_batch(self, indices):
        """The samples at ``indices`` of this subset, gathered by the inner data set.

        A duck-typed inner data set without ``get_batch`` is stacked sample
        by sample, as :class:`DataLoader` does for it directly.
        """
        inner = getattr(self.dataset, "get_batch", None)
        if inner is None:
            return Dataset.get_batch(self.dataset, self.indices[indices])
        return inner(self.indices[indices])


class DataLoader:
    """Iterate over ``dataset`` in mini-batches, each a tuple of Tensors on ``device``.

    Args:
        dataset: a :class:`Dataset` (a :class:`TensorDataset` is fastest).
            Arrays go in a :class:`TensorDataset`: a tuple or list of arrays of
            equal length but different shapes, fewer than that length,
            ``DataLoader((x, y))``, is refused with a ``TypeError`` saying so.
        batch_size: samples per batch.
        shuffle: a new random order every epoch (see the module docstring).
        drop_last: leave out a last batch smaller than ``batch_size``.
        seed: an ``int``, a ``numpy.random.Generator`` (one seed is drawn from
            it), or ``None``: draw one from :func:`tinygrad_cnn.get_rng`, so
            ``tinygrad_cnn.manual_seed`` before building the loader fixes it
            (an unshuffled loader draws nothing and takes seed 0).
        device: where batches go.  ``None``: host arrays go to the default
            device and Tensors given to a :class:`TensorDataset` stay on theirs.

    Batches keep the data's dtypes (the bundled loaders give float32 images
    and int64 labels).  An unshuffled batch of host data is a read-only view
    into the data set's arrays, not a copy.

    Each iteration runs one epoch, as in PyTorch: iterating again after a
    ``break`` starts the next epoch.  An unfinished epoch is continued only
    through :meth:`state_dict` / :meth:`load_state_dict` (a run stopped
    mid-epoch and resumed): ``loader.load_state_dict(loader.state_dict())``
    before iterating continues it in this process too.
    """

    def __init__(self, dataset, batch_size=1, shuffle=False, drop_last=False, seed=None,
                 device=None):
        batch_size = check_int("DataLoader: batch_size", batch_size, low=1)
        _refuse_unwrapped_arrays(dataset)
        if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
            raise TypeError(f"DataLoader needs a data set with __len__ and __getitem__, "
                            f"got {type(dataset).__name__}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = check_flag("DataLoader: shuffle", shuffle)
        self.drop_last = check_flag("DataLoader: drop_last", drop_last)
        # An unshuffled loader needs no seed; not drawing one leaves the
        # global generator's stream (weight init, dropout) undisturbed.
        self.seed = _resolve_seed(0 if seed is None and not self.shuffle else seed)
        # None keeps device tensors where they are (see _to_tensors); resolve
        # the device now so a bad name fails here, not mid-epoch.
        self._backend = get_backend(device) if device is not None else None
        self._default_backend = get_backend(None)
        self._next_epoch = 0   # the epoch the next iter() runs
        self._start_batch = 0  # where it starts (non-zero only after load_state_dict)
        self._position = None  # (epoch, batches handed out) of the latest iteration

    def __len__(self):
        n, b = len(self.dataset), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    @property
    def epoch(self):
        """The epoch of :meth:`state_dict`: that of an unfinished iteration (inside its
        loop body, or after a ``break`` or an interrupt), else the next one to run."""
        return self.state_dict()["epoch"]

    def epoch_order(self, epoch):
        """The sample order of ``epoch``: a permutation, or ``None`` for in-order."""
        if not self.shuffle:
            return None
        return np.random.default_rng([self.seed, int(epoch)]).permutation(len(self.dataset))

    def __iter__(self):
        epoch, start = self._next_epoch, self._start_batch
        self._next_epoch, self._start_batch = epoch + 1, 0
        self._position = (epoch, start)
        return self._batches(epoch, start)

    def _batches(self, epoch, start):
        order = self.epoch_order(epoch)
        n, b = len(self.dataset), self.batch_size
        get_batch = getattr(self.dataset, "get_batch", None) or \
            (lambda idx: Dataset.get_batch(self.dataset, idx))
        sources = _field_backends(self.dataset)
        sliceable = isinstance(self.dataset, TensorDataset)
        for k in range(start, len(self)):
            lo, hi = k * b, min((k + 1) * b, n)
            if order is not None:
                index = order[lo:hi]
            else:
                index = slice(lo, hi) if sliceable else np.arange(lo, hi)
            arrays = get_batch(index)
            # Count the batch as handed out before yielding it, so a
            # state_dict() taken in the loop body says "resume after this one".
            self._position = (epoch, k + 1)
            yield self._to_tensors(arrays, sources, views=isinstance(index, slice))

    def _to_tensors(self, arrays, sources, views):
        if not isinstance(arrays, tuple):
            arrays = (arrays,)
        out = []
        for k, a in enumerate(arrays):
            source = sources[k] if sources is not None and k < len(sources) else None
            if views and isinstance(a, np.ndarray) and a.flags.writeable:
                # A view into the data set: make writes fail loudly instead
                # of silently changing the data.
                a = a.view()
                a.flags.writeable = False
            if source is None:
                if not isinstance(a, np.ndarray):
                    raise TypeError(f"{type(self.dataset).__name__}.get_batch returned a "
                                    f"{type(a).__name__} for field {k}; expected a NumPy array")
                backend = self._backend or self._default_backend
            else:
                backend = self._backend or source
            # Tensor._make skips Tensor's dtype rules, so apply them here: strings,
            # complex numbers or objects (e.g. stacked dicts) would make tensors
            # that no op supports.
            dtype = getattr(a, "dtype", None)
            if dtype is None or dtype.kind not in _SUPPORTED_KINDS:
                raise TypeError(f"{type(self.dataset).__name__}: field {k} of a batch has "
                                f"dtype {dtype}; expected numbers (float, int or bool) to "
                                f"make a tensor (convert e.g. string labels to class indices)")
            if source is not None and backend is not source:
                a = source.to_numpy(a)  # explicit device -> host, then to ``backend``
            out.append(Tensor._make(backend.asarray(a), backend))
        return tuple(out)

    # ---- resumable state -----------------------------------------------------
    def state_dict(self):
        """Where the loader is, and the settings that position depends on.

        ``{"seed", "epoch", "batch", "batch_size", "drop_last", "shuffle",
        "dataset_length"}``, all ints or bools.
        ``epoch``/``batch`` name the batch a resumed loader
        (:meth:`load_state_dict`) hands out next: after a complete epoch
        ``e`` they are ``(e + 1, 0)``; inside the loop body of epoch ``e``
        after batch ``k``, or after leaving that loop there, ``(e, k + 1)``.
        (Iterating again without :meth:`load_state_dict` starts epoch
        ``e + 1`` instead: see the class docstring.)
        """
        if self._position is not None:
            epoch, done = self._position
            if done >= len(self):
                epoch, done = epoch + 1, 0
        else:
            epoch, done = self._next_epoch, self._start_batch
        return {"seed": self.seed, "epoch": epoch, "batch": done, **self._settings()}

    def _settings(self):
        return {"batch_size": self.batch_size, "drop_last": self.drop_last,
                "shuffle": self.shuffle, "dataset_length": len(self.dataset)}

    def load_state_dict(self, state):
        """Continue from a :meth:`state_dict`: the next iteration resumes there.

        The batch size, ``drop_last``, ``shuffle`` and data set length
        saved in ``state`` must match this loader's, else ``ValueError``
        names the setting that differs: a batch position means other
        samples under other settings, so a resume would silently skip or
        repeat some.  States holding only seed, epoch and batch (written
        by earlier versions) are accepted without that check.
        """
        if not isinstance(state, dict):
            raise TypeError(f"DataLoader.load_state_dict: expected a dict from state_dict(), "
                            f"got {state!r}")
        missing = {"seed", "epoch", "batch"} - set(state)
        if missing:
            raise KeyError(f"DataLoader state is missing {sorted(missing)}; expected the "
                           f"keys seed, epoch, batch")
        seed, epoch, batch = (_state_int(state, k) for k in ("seed", "epoch", "batch"))
        for key, current in self._settings().items():
            if key not in state:
                continue
            saved = np.asarray(state[key]).item()
            if saved != current:
                raise ValueError(f"DataLoader state was saved with {key}={saved!r}, but this "
                                 f"loader has {key}={current!r}; resuming its position with "
                                 f"another {key} would skip or repeat samples (build the "
                                 f"loader with the saved settings)")
        if batch > len(self):   # _state_int refused negative counts
            raise ValueError(f"DataLoader state epoch={epoch}, batch={batch} is out of range "
                             f"for a loader of {len(self)} batches")
        if batch == len(self) and batch > 0:
            epoch, batch = epoch + 1, 0
        self.seed = _resolve_seed(seed)
        self._next_epoch, self._start_batch, self._position = epoch, batch, None

    def __repr__(self):
        return (f"DataLoader({type(self.dataset).__name__} of {len(self.dataset)}, "
                f"batch_size={self.batch_size}, shuffle={self.shuffle}, "
                f"drop_last={self.drop_last}, seed={self.seed})")


def _refuse_unwrapped_arrays(dataset):
    """Refuse ``(x, y)``, arrays of equal length given as the data set itself.

    A tuple or list is a data set of its items, so ``(x, y)`` would be two
    "samples", x and y, of different shapes: their stacking fails with a
    puzzling message, and with ``batch_size=1`` nothing fails at all.  Only
    fewer arrays than each one's length are taken for that mistake: a list
    of many samples of different shapes that share their first axis (images
    of one height, for ``batch_size=1``) is a data set; a short one is
    refused too, and can be passed as a :class:`Dataset`.
    """
    if not isinstance(dataset, (tuple, list)) or len(dataset) < 2:
        return
    try:
        first = tuple(dataset[0].shape)
    except (AttributeError, TypeError):
        return
    if not first or len(dataset) >= first[0]:   # (a long list is looked at no further)
        return
    if not all(isinstance(a, Tensor) or (hasattr(a, "shape") and hasattr(a, "dtype"))
               for a in dataset):
        return
    shapes = [tuple(a.shape) for a in dataset]
    if all(shapes) and len({s[0] for s in shapes}) == 1 and len(set(shapes)) > 1:
        kind = type(dataset).__name__
        names = "x, y" if len(shapes) == 2 else "*arrays"
        raise TypeError(f"DataLoader got a {kind} of {len(shapes)} arrays of {shapes[0][0]} "
                        f"samples each (shapes {', '.join(map(str, shapes))}) as its data set, "
                        f"which would make each array one sample; wrap them: "
                        f"DataLoader(TensorDataset({names}), ...); if they are samples of "
                        f"different shapes, give a Dataset whose __getitem__ returns them")


def _state_int(state, key):
    """``state[key]`` as an int >= 0: the package's rule for a loaded count (a 0-d
    array or tensor stands for its number; a whole float, as a count may have
    been saved, is taken as the optimisers take their step)."""
    return check_int(f"DataLoader state {key}", state[key], low=0, whole_floats=True)


def _subset_indices(indices, n):
    """``indices`` (integers or a boolean mask over ``n`` samples) -> a flat int64 array."""
    idx = np.asarray(indices)
    if idx.dtype == np.bool_:
        # Casting a mask to int64 would give 0/1 "indices": the first two
        # samples, repeated, instead of the selected ones.
        if idx.ndim != 1 or idx.shape[0] != n:
            raise IndexError(f"Subset: a boolean mask must have one entry per sample, i.e. "
                             f"shape ({n},) for a data set of length {n}; got shape "
                             f"{idx.shape}")
        return np.flatnonzero(idx).astype(np.int64)
    # An empty list comes out of asarray as float64; it selects nothing, so let it be.
    if idx.dtype.kind not in "iu" and idx.size:
        raise TypeError(f"Subset indices must be integers or a boolean mask, got dtype "
                        f"{idx.dtype}; floats are not cut down to integers silently")
    if idx.dtype.kind == "u" and idx.size and idx.max() > np.iinfo(np.int64).max:
        raise IndexError(f"Subset indices must lie in [0, {n}) for a data set of length {n}; "
                         f"got index {idx.max()}")
    return idx.astype(np.int64).reshape(-1)


def _resolve_seed(seed):
    """The loader's seed as an int: None and a Generator draw one (None from get_rng())."""
    try:
        seed = check_seed("DataLoader: seed", seed, none=True, also=(np.random.Generator,))
    except ValueError as e:   # a negative seed: a TypeError here from the start (kept)
        raise TypeError(str(e)) from None
    if seed is None:
        seed = get_rng()
    if isinstance(seed, np.random.Generator):
        return int(seed.integers(0, _SEED_BOUND))
    return seed


def _field_backends(dataset):
    """Per field, the backend of device Tensors given to a TensorDataset (None: host)."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return dataset.backends if isinstance(dataset, TensorDataset) else None
