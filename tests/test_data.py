"""Data sets, the DataLoader (batching, shuffling, resuming, devices), digits,
normalisation and splits."""
import sys

import numpy as np
import pytest

import tinygrad_cnn as tg
from tinygrad_cnn import backend as backend_mod
from tinygrad_cnn.data import (
    DataLoader, Dataset, Subset, TensorDataset, load_dataset, load_digits, mean_std,
    normalize, split_indices, stratified_split_indices, train_val_split,
)


def make_data(n=23, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 1, 3, 3)).astype(np.float32)
    y = np.arange(n, dtype=np.int64)  # label == sample index, to check alignment
    return x, y


class ListDataset(Dataset):
    """A generic data set: no get_batch of its own, samples built one at a time."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


def collect(loader):
    return [tuple(t.numpy() for t in batch) for batch in loader]


# ---- TensorDataset ------------------------------------------------------------------
def test_tensor_dataset_rows_and_length():
    x, y = make_data()
    ds = TensorDataset(x, tg.tensor(y))
    assert len(ds) == 23
    xi, yi = ds[5]
    np.testing.assert_array_equal(xi, x[5])
    assert int(yi) == 5


@pytest.mark.parametrize("arrays, match", [
    ((np.zeros((4, 2)), np.zeros(5)), r"different lengths \[4, 5\]"),
    ((), "at least one array"),
    ((np.float32(1.0),), "0-d"),
])
def test_tensor_dataset_rejects_bad_arrays(arrays, match):
    with pytest.raises(ValueError, match=match):
        TensorDataset(*arrays)


def test_tensor_dataset_index_out_of_range_is_clear():
    with pytest.raises(IndexError, match="out of range for a TensorDataset of length 3"):
        TensorDataset(np.zeros(3))[3]


@pytest.mark.parametrize("index", [True, np.bool_(False), 1.0, "a", None],
                         ids=["bool", "numpy-bool", "float", "str", "none"])
def test_tensor_dataset_index_of_the_wrong_type_is_a_type_error(index):
    # A bool was read by NumPy as a mask (every sample, with a new axis), a float gave
    # NumPy's own IndexError.
    with pytest.raises(TypeError, match=r"TensorDataset indices must be ints, slices or "
                                        r"integer arrays, got"):
        TensorDataset(np.zeros((3, 2)), np.zeros(3))[index]


@pytest.mark.parametrize("call, error, match", [
    (lambda: split_indices(10.0, 0.5), TypeError, r"split_indices: n must be an int, got 10\.0"),
    (lambda: split_indices(10, 0.5, seed="a"), TypeError,
     r"split_indices: seed must be an int >= 0, a numpy\.random\.Generator, a "
     r"numpy\.random\.SeedSequence or None, got 'a' \(str\)"),
    (lambda: split_indices(10, 0.5, seed=1.5), TypeError, r"seed must be an int.*1\.5"),
    # the DataLoader's seed check, in its words (it was NumPy's "expected non-negative
    # integer")
    (lambda: split_indices(10, 0.5, seed=-1), ValueError,
     r"split_indices: seed must be an int >= 0, got -1$"),
    (lambda: stratified_split_indices(np.arange(10) % 2, 2.5, 0), TypeError,
     r"n_test must be an int, got 2\.5"),
], ids=["n-float", "seed-str", "seed-float", "seed-negative", "stratified-n-test-float"])
def test_split_argument_errors(call, error, match):
    # They were a ValueError saying 10.0 samples are fewer than 2, and raw TypeErrors
    # from NumPy's SeedSequence and from slicing.
    with pytest.raises(error, match=match):
        call()


# ---- DataLoader: batching -----------------------------------------------------------
@pytest.mark.parametrize("n, batch_size, drop_last, sizes", [
    (23, 5, False, [5, 5, 5, 5, 3]),
    (23, 5, True, [5, 5, 5, 5]),
    (20, 5, True, [5, 5, 5, 5]),
    (3, 10, False, [3]),
    (3, 10, True, []),
    (0, 4, False, []),
])
def test_batch_sizes_and_len(n, batch_size, drop_last, sizes):
    x, y = make_data(n)
    for shuffle in (False, True):
        loader = DataLoader(TensorDataset(x, y), batch_size, shuffle=shuffle, drop_last=drop_last,
                            seed=1)
        batches = collect(loader)
        assert len(loader) == len(sizes)
        assert [b[0].shape[0] for b in batches] == sizes


def test_unshuffled_batches_are_slices_in_order_with_dtypes():
    x, y = make_data()
    batches = list(DataLoader(TensorDataset(x, y), batch_size=5))
    for k, (xb, yb) in enumerate(batches):
        assert isinstance(xb, tg.Tensor) and isinstance(yb, tg.Tensor)
        assert xb.dtype == np.float32 and yb.dtype == np.int64 and xb.device == "cpu"
        np.testing.assert_array_equal(xb.numpy(), x[5 * k:5 * k + 5])
        np.testing.assert_array_equal(yb.numpy(), y[5 * k:5 * k + 5])


def test_unshuffled_batch_views_are_read_only():
    x, y = make_data()
    xb, _ = next(iter(DataLoader(TensorDataset(x, y), batch_size=4)))
    with pytest.raises(ValueError):
        xb.data[0] = 1.0  # would otherwise write into the data set
    assert x.flags.writeable  # the caller's array is untouched


def test_shuffled_epoch_is_a_permutation_with_aligned_rows():
    x, y = make_data()
    loader = DataLoader(TensorDataset(x, y), batch_size=4, shuffle=True, seed=3)
    for _ in range(2):
        xs, ys = (np.concatenate(parts) for parts in zip(*collect(loader)))
        assert sorted(ys) == list(range(23)) and not np.array_equal(ys, np.arange(23))
        np.testing.assert_array_equal(xs, x[ys])  # images follow their labels


def test_generic_dataset_matches_tensor_dataset():
    x, y = make_data()
    for shuffle in (False, True):
        fast = collect(DataLoader(TensorDataset(x, y), 6, shuffle=shuffle, seed=7))
        slow = collect(DataLoader(ListDataset(x, y), 6, shuffle=shuffle, seed=7))
        assert len(fast) == len(slow)
        for (fx, fy), (sx, sy) in zip(fast, slow):
            np.testing.assert_array_equal(fx, sx)
            np.testing.assert_array_equal(fy, sy.astype(np.int64))


def test_generic_dataset_with_mismatched_samples_is_named():
    class Ragged(Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return np.zeros(2 + (i == 2)), 0

    with pytest.raises(ValueError, match=r"field 0 has different shapes.*\(2,\).*\(3,\)"):
        list(DataLoader(Ragged(), batch_size=4))


class Fields(Dataset):
    """Samples whose second field is whatever ``make(i)`` gives."""

    def __init__(self, make):
        self.make = make

    def __len__(self):
        return 4

    def __getitem__(self, i):
        return np.zeros(2, np.float32), self.make(i)


@pytest.mark.parametrize("dataset, dtype", [
    (Fields(lambda i: "cat"), "<U3"),
    (Fields(lambda i: 1 + 2j), "complex128"),
    (Fields(lambda i: {"label": i}), "object"),
    (TensorDataset(np.zeros((4, 2)), np.array(["a", "b", "c", "d"])), "<U1"),
    (TensorDataset(np.zeros(4, dtype=[("a", "f4"), ("b", "i4")])), "[('a', '<f4'), ('b', '<i4')]"),
])
def test_batches_of_non_numbers_are_refused_naming_the_field(dataset, dtype):
    field = 0 if dtype.startswith("[") else 1
    with pytest.raises(TypeError) as info:
        next(iter(DataLoader(dataset, 2)))
    message = str(info.value)
    assert f"field {field}" in message and dtype in message and "expected numbers" in message


class Plain:
    """A duck-typed data set: __len__ and __getitem__ only, not a Dataset subclass."""

    def __len__(self):
        return 5

    def __getitem__(self, i):
        return np.full(2, i, np.float32), i


def test_subset_of_a_duck_typed_dataset_stacks_samples_like_the_loader():
    direct = collect(DataLoader(Plain(), 5))
    (xb, yb), = collect(DataLoader(Subset(Plain(), [3, 1]), 2))
    np.testing.assert_array_equal(yb, [3, 1])
    np.testing.assert_array_equal(xb, direct[0][0][[3, 1]])
    np.testing.assert_array_equal(Subset(Plain(), [4, 0, 2]).get_batch(slice(1, 3))[1], [0, 2])


@pytest.mark.parametrize("kwargs, error, match", [
    ({"batch_size": 0}, ValueError, r"DataLoader: batch_size must be an int >= 1, got 0"),
    ({"batch_size": 2.5}, TypeError, r"batch_size must be an int, got 2\.5 \(float\)"),
    ({"batch_size": "2"}, TypeError, r"batch_size must be an int, got '2' \(str\)"),
    ({"batch_size": True}, TypeError, r"batch_size must be an int, got True"),
    ({"seed": -1}, TypeError, r"DataLoader: seed must be an int >= 0, got -1$"),
    ({"seed": "abc"}, TypeError, r"DataLoader: seed must be an int >= 0, a "
                                 r"numpy\.random\.Generator or None, got 'abc' \(str\)"),
    ({"seed": True}, TypeError, r"DataLoader: seed must be an int >= 0, .* got True"),
    # flags are True or False: "no" was taken as True
    ({"shuffle": "no"}, TypeError, r"DataLoader: shuffle must be True or False, got 'no'"),
    ({"drop_last": 1}, TypeError, r"DataLoader: drop_last must be True or False, got 1"),
    ({"device": "tpu"}, tg.DeviceError, "unknown device"),
])
def test_loader_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        DataLoader(TensorDataset(np.zeros(4)), **kwargs)


X, Y = np.zeros((10, 1, 8, 8), np.float32), np.arange(10)


@pytest.mark.parametrize("dataset, match", [
    ((X, Y), r"DataLoader got a tuple of 2 arrays of 10 samples each \(shapes \(10, 1, 8, 8\), "
             r"\(10,\)\) as its data set, which would make each array one sample; wrap them: "
             r"DataLoader\(TensorDataset\(x, y\), \.\.\.\)"),
    ([X, Y], r"DataLoader got a list of 2 arrays of 10 samples each"),
    ((tg.tensor(X), tg.tensor(Y)), r"a tuple of 2 arrays .*\(TensorDataset\(x, y\)"),
    ((X, Y, np.ones(10)), r"a tuple of 3 arrays .*\(TensorDataset\(\*arrays\)"),
    ([X, Y], r"\.\.\.\); if they are samples of different shapes, give a Dataset whose "
             r"__getitem__ returns them$"),
    # Still data sets of their items: samples of one shape, (image, label) pairs.
    ([X[0], X[1]], None), ([(X[0], 1), (X[1], 2)], None), ((X,), None), ((X, Y[:4]), None),
    # Samples of one height and many widths, as many as their height or more (batch_size=1).
    ([np.zeros((3, 8, w)) for w in (5, 6, 7)], None),
    ([np.zeros((8, w)) for w in range(2, 12)], None),
    ([np.zeros((8, 8)), np.ones((8, 8))], None),   # fewer samples than rows, one shape
    ([X[0, 0], np.array(3.0)], None),   # a 0-d sample has no first axis to compare
], ids=["tuple", "list", "tensors", "three", "what else", "samples", "pairs", "one array",
        "lengths differ", "3 CHW images", "10 HW images", "2 HW images of one shape",
        "a 0-d sample"])
def test_loader_refuses_arrays_not_wrapped_in_a_dataset(dataset, match):
    """(x, y) is a data set of two "samples", x and y: stacking them failed with "field 0
    has different shapes", and with batch_size=1 nothing failed at all."""
    if match is None:
        loader = DataLoader(dataset, batch_size=1)
        batches = list(loader)
        assert len(loader) == len(batches) == len(dataset)
        return
    with pytest.raises(TypeError, match=match):
        DataLoader(dataset, batch_size=1)


@pytest.mark.parametrize("seed", [tg.tensor(3), np.int64(3), np.array(3)],
                         ids=["0d-tensor", "numpy-int", "0d-array"])
def test_seeds_may_be_numpy_ints_and_0d_integer_tensors_as_other_ints(seed):
    # split_indices refused a 0-d tensor, the DataLoader a 0-d tensor or array.
    assert np.array_equal(split_indices(10, 0.5, seed=seed)[1], split_indices(10, 0.5, 3)[1])
    assert DataLoader(TensorDataset(np.zeros(4)), 2, shuffle=True, seed=seed).seed == 3


def test_split_indices_takes_a_numpy_seed_sequence_as_default_rng_does():
    # It did until today's seed check; the same split as from its own generator.
    seq = np.random.SeedSequence(5)
    assert np.array_equal(split_indices(10, 0.5, seed=seq)[1],
                          split_indices(10, 0.5, seed=np.random.default_rng(seq))[1])


def test_loader_batch_size_may_be_a_0d_integer_tensor():
    loader = DataLoader(TensorDataset(np.zeros(4)), tg.tensor(2))
    assert loader.batch_size == 2 and type(loader.batch_size) is int and len(loader) == 2


# ---- DataLoader: reproducibility and resuming -----------------------------------------------
def epochs(loader, n):
    return [np.concatenate([b[1] for b in collect(loader)]) for _ in range(n)]


def test_seed_fixes_the_order_and_epochs_differ():
    x, y = make_data()
    a = epochs(DataLoader(TensorDataset(x, y), 4, shuffle=True, seed=11), 3)
    b = epochs(DataLoader(TensorDataset(x, y), 4, shuffle=True, seed=11), 3)
    c = epochs(DataLoader(TensorDataset(x, y), 4, shuffle=True, seed=12), 1)
    for ea, eb in zip(a, b):
        np.testing.assert_array_equal(ea, eb)
    assert not np.array_equal(a[0], a[1]) and not np.array_equal(a[0], c[0])


def test_seed_none_follows_manual_seed_and_generators_are_accepted():
    x, y = make_data()
    tg.manual_seed(5)
    a = epochs(DataLoader(TensorDataset(x, y), 4, shuffle=True), 2)
    tg.manual_seed(5)
    b = epochs(DataLoader(TensorDataset(x, y), 4, shuffle=True), 2)
    np.testing.assert_array_equal(np.stack(a), np.stack(b))
    g1, g2 = np.random.default_rng(9), np.random.default_rng(9)
    assert DataLoader(TensorDataset(y), seed=g1).seed == DataLoader(TensorDataset(y), seed=g2).seed
    # an unshuffled loader draws no seed: the stream behind weight init is left as it was
    tg.manual_seed(5)
    expected = tg.get_rng().random(3)
    tg.manual_seed(5)
    assert DataLoader(TensorDataset(y), 4).seed == 0
    np.testing.assert_array_equal(tg.get_rng().random(3), expected)


def test_resume_at_epoch_boundary_gives_the_uninterrupted_batches():
    x, y = make_data()
    reference = epochs(DataLoader(TensorDataset(x, y), 4, shuffle=True, seed=21), 4)

    first = DataLoader(TensorDataset(x, y), 4, shuffle=True, seed=21)
    epochs(first, 2)
    state = first.state_dict()
    assert state == {"seed": 21, "epoch": 2, "batch": 0, "batch_size": 4, "drop_last": False,
                     "shuffle": True, "dataset_length": 23}
    assert all(isinstance(v, int) for v in state.values())

    resumed = DataLoader(TensorDataset(x, y), 4, shuffle=True, seed=999)  # seed comes from state
    resumed.load_state_dict({k: np.int64(v) for k, v in state.items()})  # as read back by np.load
    np.testing.assert_array_equal(np.stack(epochs(resumed, 2)), np.stack(reference[2:]))


def test_resume_mid_epoch_and_peek_semantics():
    x, y = make_data()
    reference = epochs(DataLoader(TensorDataset(x, y), 4, shuffle=True, seed=2), 2)

    loader = DataLoader(TensorDataset(x, y), 4, shuffle=True, seed=2)
    seen = []
    for k, (_, yb) in enumerate(loader):
        seen.append(yb.numpy())
        if k == 2:
            state = loader.state_dict()  # taken in the loop body after batch 2
            break
    assert state["epoch"] == 0 and state["batch"] == 3

    resumed = DataLoader(TensorDataset(x, y), 4, shuffle=True, seed=0)
    resumed.load_state_dict(state)
    rest = np.concatenate([b[1] for b in collect(resumed)])  # the rest of epoch 0
    np.testing.assert_array_equal(np.concatenate(seen + [rest]), reference[0])
    np.testing.assert_array_equal(epochs(resumed, 1)[0], reference[1])  # then epoch 1 whole


def test_iterating_again_after_a_break_starts_the_next_epoch_unless_resumed():
    """As documented: a new iteration is a new epoch (as in PyTorch); continuing the
    unfinished one goes through state_dict / load_state_dict, in this process too."""
    x, y = make_data()
    reference = epochs(DataLoader(TensorDataset(x, y), 4, shuffle=True, seed=3), 2)
    loader = DataLoader(TensorDataset(x, y), 4, shuffle=True, seed=3)
    for first in loader:
        break
    assert loader.epoch == 0 and loader.state_dict()["batch"] == 1
    np.testing.assert_array_equal(epochs(loader, 1)[0], reference[1])   # a fresh epoch 1
    loader = DataLoader(TensorDataset(x, y), 4, shuffle=True, seed=3)
    for first in loader:
        break
    loader.load_state_dict(loader.state_dict())
    rest = np.concatenate([b[1] for b in collect(loader)])
    np.testing.assert_array_equal(np.concatenate([first[1].numpy(), rest]), reference[0])


def test_load_state_dict_validates():
    loader = DataLoader(TensorDataset(np.zeros(10)), 4)
    with pytest.raises(KeyError, match="missing"):
        loader.load_state_dict({"seed": 1, "epoch": 0})
    with pytest.raises(ValueError, match="out of range"):
        loader.load_state_dict({"seed": 1, "epoch": 0, "batch": 4})
    loader.load_state_dict({"seed": 1, "epoch": 0, "batch": 3})  # == len: the next epoch
    assert loader.state_dict() == {"seed": 1, "epoch": 1, "batch": 0, "batch_size": 4,
                                   "drop_last": False, "shuffle": False, "dataset_length": 10}


@pytest.mark.parametrize("state, error, match", [
    (5, TypeError, r"expected a dict from state_dict\(\), got 5"),
    ({"seed": 1, "epoch": "a", "batch": 0}, TypeError,
     r"DataLoader state epoch must be an int, got 'a' \(str\)"),
    ({"seed": 1, "epoch": 0, "batch": 1.5}, TypeError,
     r"DataLoader state batch must be an int, got 1\.5 \(float\)"),
    ({"seed": [1, 2], "epoch": 0, "batch": 0}, TypeError,
     r"DataLoader state seed must be an int, got \[1, 2\] \(list\)"),
    ({"seed": 1, "epoch": -1, "batch": 0}, ValueError,
     r"DataLoader state epoch must be an int >= 0, got -1"),
    ({"seed": 1, "epoch": 0, "batch": True}, TypeError,
     r"DataLoader state batch must be an int, got True"),
], ids=["not-a-dict", "str", "float", "list", "negative", "bool"])
def test_load_state_dict_names_a_damaged_entry(state, error, match):
    loader = DataLoader(TensorDataset(np.zeros(10)), 4)
    with pytest.raises(error, match=match):
        loader.load_state_dict(state)
    assert loader.state_dict()["epoch"] == 0


def test_load_state_dict_takes_whole_floats_and_0d_values():
    # A count saved as a float (as PyTorch's Adam saves its step) or as a 0-d array.
    loader = DataLoader(TensorDataset(np.zeros(10)), 4)
    loader.load_state_dict({"seed": np.int64(5), "epoch": 3.0, "batch": tg.tensor(1)})
    state = loader.state_dict()
    assert (state["seed"], state["epoch"], state["batch"]) == (5, 3, 1)
    assert all(type(state[k]) is int for k in ("seed", "epoch", "batch"))


@pytest.mark.parametrize("other, match", [
    ({"batch_size": 3}, "saved with batch_size=2, but this loader has batch_size=3"),
    ({"drop_last": True}, "saved with drop_last=False, but this loader has drop_last=True"),
    ({"shuffle": False}, "saved with shuffle=True, but this loader has shuffle=False"),
    ({"n": 7}, "saved with dataset_length=6, but this loader has dataset_length=7"),
])
def test_load_state_dict_refuses_a_state_saved_with_other_settings(other, match):
    """A batch position means other samples under another batch size, drop_last,
    shuffle or data set length: resuming there would skip or repeat samples."""
    def loader(n=6, **kwargs):
        settings = {"batch_size": 2, "shuffle": True, "seed": 0, **kwargs}
        return DataLoader(TensorDataset(np.arange(n, dtype=np.float32)), **settings)
    saved = loader()
    next(iter(saved))
    state = saved.state_dict()
    with pytest.raises(ValueError, match=match):
        loader(**other).load_state_dict(state)
    same = loader()
    same.load_state_dict(state)
    assert same.state_dict() == state


def test_load_state_dict_accepts_states_of_earlier_versions():
    """Checkpoints written before the settings were recorded hold seed, epoch, batch only."""
    x, y = make_data()
    reference = epochs(DataLoader(TensorDataset(x, y), 4, shuffle=True, seed=8), 1)[0]
    loader = DataLoader(TensorDataset(x, y), 4, shuffle=True, seed=0)
    loader.load_state_dict({"seed": 8, "epoch": 0, "batch": 2})
    np.testing.assert_array_equal(np.concatenate([b[1] for b in collect(loader)]),
                                  reference[8:])


# ---- devices ----------------------------------------------------------------------
@pytest.fixture
def fake_device(monkeypatch):
    """A second host backend registered as device 'datatest' for this test only."""
    b = backend_mod.NumpyBackend()
    b.device = "datatest"
    monkeypatch.setitem(backend_mod._BACKENDS, "datatest", b)
    return b


def test_batches_move_to_the_requested_device(fake_device):
    x, y = make_data()
    xb, yb = next(iter(DataLoader(TensorDataset(x, y), 4, shuffle=True, seed=0,
                                  device="datatest")))
    assert xb.device == yb.device == "datatest"
    # Tensors given on a device stay there when no device is asked for.
    on_dev = TensorDataset(tg.tensor(x, device="datatest"), y)
    xb, yb = next(iter(DataLoader(on_dev, 4)))
    assert (xb.device, yb.device) == ("datatest", "cpu")
    xb, _ = next(iter(DataLoader(Subset(on_dev, [3, 1]), 2, device="cpu")))
    assert xb.device == "cpu"
    np.testing.assert_array_equal(xb.numpy(), x[[3, 1]])


# ---- Subset and splits ----------------------------------------------------------------
def test_subset_batches_use_the_fast_path_and_check_range():
    x, y = make_data()
    sub = Subset(TensorDataset(x, y), [4, 0, 9])
    assert len(sub) == 3 and int(sub[0][1]) == 4
    (_, yb), = collect(DataLoader(sub, 3))
    np.testing.assert_array_equal(yb, [4, 0, 9])
    for bad in (23, -24):   # negative indices count from the end, as documented
        with pytest.raises(IndexError, match=r"\[-23, 23\).*got range \[%d, %d\]" % (bad, bad)):
            Subset(TensorDataset(x, y), [bad])
    assert int(Subset(TensorDataset(x, y), [-23])[0][1]) == 0


def test_subset_takes_a_boolean_mask_as_the_selected_samples():
    x, y = make_data(6)
    sub = Subset(TensorDataset(x, y), y % 2 == 1)
    np.testing.assert_array_equal(sub.indices, [1, 3, 5])
    (_, yb), = collect(DataLoader(sub, 3))
    np.testing.assert_array_equal(yb, [1, 3, 5])
    assert len(Subset(TensorDataset(x, y), np.zeros(6, bool))) == 0
    assert len(Subset(TensorDataset(x, y), [])) == 0  # an empty list stays valid


@pytest.mark.parametrize("indices, error, match", [
    ([True, False], IndexError, r"shape \(6,\) for a data set of length 6; got shape \(2,\)"),
    (np.ones((2, 3), bool), IndexError, r"got shape \(2, 3\)"),
    ([0.9, 2.7], TypeError, "got dtype float64"),
    (np.array([1, 2], np.float32), TypeError, "got dtype float32"),
    (["1"], TypeError, "got dtype <U1"),
])
def test_subset_refuses_masks_of_another_length_and_non_integer_indices(indices, error, match):
    x, y = make_data(6)
    with pytest.raises(error, match=match):
        Subset(TensorDataset(x, y), indices)


def test_train_val_split_forms():
    x, y = make_data(50)
    train_idx, val_idx = train_val_split(50, val_fraction=0.2, seed=4)
    assert len(val_idx) == 10 and len(train_idx) == 40
    assert sorted(np.concatenate([train_idx, val_idx])) == list(range(50))

    (xt, yt), (xv, yv) = train_val_split((x, y), val_fraction=0.2, seed=4)
    np.testing.assert_array_equal(yv, val_idx)  # y is the sample index
    np.testing.assert_array_equal(xt, x[yt])

    tr, va = train_val_split(TensorDataset(x, y), val_fraction=0.2, seed=4)
    assert isinstance(tr, Subset) and np.array_equal(va.indices, val_idx)

    again, _ = split_indices(50, 0.2, seed=4)
    other, _ = split_indices(50, 0.2, seed=5)
    assert np.array_equal(again, train_idx) and not np.array_equal(other, train_idx)
    # seed=None draws from the package's generator, which manual_seed fixes
    drawn = []
    for seed in (7, 7, 8):
        tg.manual_seed(seed)
        drawn.append(split_indices(50, 0.2, seed=None)[1])
    assert np.array_equal(drawn[0], drawn[1]) and not np.array_equal(drawn[0], drawn[2])


@pytest.mark.parametrize("data, frac, error, match", [
    (10, 0.0, ValueError, "strictly between 0 and 1"),
    (10, 1.0, ValueError, "strictly between 0 and 1"),
    (1, 0.5, ValueError, "at least 2 samples"),
    ((np.zeros(3), np.zeros(4)), 0.5, ValueError, "common length"),
    ("abc", 0.5, TypeError, "takes an int"),
])
def test_train_val_split_errors(data, frac, error, match):
    with pytest.raises(error, match=match):
        train_val_split(data, frac)


def test_tiny_split_keeps_one_sample_each_side():
    train, val = split_indices(2, 0.01, seed=0)
    assert len(train) == len(val) == 1


# ---- normalisation ----------------------------------------------------------------
def test_mean_std_per_channel_and_normalize():
    rng = np.random.default_rng(0)
    x = (rng.random((40, 3, 5, 5)) * [[[2.0]], [[5.0]], [[0.5]]] + [[[1.0]], [[-3.0]], [[0.0]]])
    x = x.astype(np.float32)
    mean, std = mean_std(x)
    assert mean.shape == std.shape == (3,) and mean.dtype == np.float32
    np.testing.assert_allclose(mean, x.transpose(1, 0, 2, 3).reshape(3, -1).mean(1), rtol=1e-5)
    np.testing.assert_allclose(std, x.transpose(1, 0, 2, 3).reshape(3, -1).std(1), rtol=1e-5)
    z = normalize(x, mean, std)
    assert z.dtype == np.float32
    np.testing.assert_allclose(z.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=(0, 2, 3)), 1, atol=1e-4)
    np.testing.assert_allclose(normalize(x[0], mean, std), z[0], rtol=1e-6)  # (C, H, W)
    np.testing.assert_allclose(normalize(x, 1.0, 2.0), (x - 1) / 2, rtol=1e-6)


@pytest.mark.parametrize("x, mean, std, error, match", [
    (np.zeros((2, 3, 4, 4), np.float32), [0.0, 0.0], [1.0, 1.0], ValueError, "2 channels"),
    (np.zeros((2, 1, 4, 4), np.float32), 0.0, 0.0, ValueError, "positive"),
    (np.zeros((2, 1, 4, 4), np.uint8), 0.0, 1.0, TypeError, "floating-point"),
])
def test_normalize_errors(x, mean, std, error, match):
    with pytest.raises(error, match=match):
        normalize(x, mean, std)


def test_mean_std_needs_nchw():
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        mean_std(np.zeros((4, 8, 8)))


# ---- digits -----------------------------------------------------------------------
def test_stratified_split_is_exact_and_proportional():
    labels = np.repeat(np.arange(3), [50, 30, 20])
    train, test = stratified_split_indices(labels, 11, seed=0)
    assert len(test) == 11 and len(train) == 89
    assert np.array_equal(np.union1d(train, test), np.arange(100))
    # quotas 5.5, 3.3, 2.2 -> floors 5, 3, 2 and the leftover goes to class 0
    assert np.bincount(labels[test]).tolist() == [6, 3, 2]


def test_digits_split():
    pytest.importorskip("sklearn")
    x_train, y_train = load_digits("train")
    x_test, y_test = load_digits("test")
    assert x_train.shape == (1437, 1, 8, 8) and x_test.shape == (360, 1, 8, 8)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    assert x_train.min() == 0.0 and x_train.max() == 1.0
    assert set(np.unique(y_test)) == set(range(10))
    # Stratified: every class is 20 % of its size in the test split, give or take one.
    from sklearn.datasets import load_digits as sk_load_digits
    counts = np.bincount(sk_load_digits().target)
    assert np.all(np.abs(np.bincount(y_test, minlength=10) - counts * 360 / 1797) < 1)
    # Fixed: the same arrays every time, and load_dataset agrees.
    x2, y2 = load_dataset("digits", "test")
    np.testing.assert_array_equal(x2, x_test)
    np.testing.assert_array_equal(y2, y_test)
    with pytest.raises(ValueError, match="'train' or 'test'"):
        load_digits("val")


def test_digits_without_sklearn_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    # The package is installed from a checkout, not PyPI: name what pip can find.
    with pytest.raises(ImportError, match=r'pip install scikit-learn \(or, in a checkout: '
                                          r'pip install -e "\.\[examples\]"\)'):
        load_digits()


def test_load_dataset_unknown_name():
    with pytest.raises(ValueError, match="unknown data set 'cifar'"):
        load_dataset("cifar")
