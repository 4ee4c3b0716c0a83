"""Data: data sets, a mini-batch loader, the bundled image data sets and their downloads.

::

    from tinygrad_cnn.data import DataLoader, TensorDataset, load_digits, mean_std, normalize

    x_train, y_train = load_digits("train")          # float32 (1437, 1, 8, 8), int64 (1437,)
    mean, std = mean_std(x_train)
    train = TensorDataset(normalize(x_train, mean, std), y_train)
    for x, y in DataLoader(train, batch_size=64, shuffle=True, seed=0):
        ...                                          # x, y are Tensors
"""
from .loader import Dataset, TensorDataset, Subset, DataLoader
from .datasets import (
    load_digits, load_mnist, load_fashion_mnist, load_dataset, DATASET_NAMES, CLASSES,
    DIGITS_CLASSES, MNIST_CLASSES, FASHION_MNIST_CLASSES, mean_std, normalize,
    split_indices, train_val_split, stratified_split_indices,
)
from .idx import IdxError, read_idx, write_idx
from .download import DownloadError, ChecksumError, CacheWriteError, data_root, dataset_dir, fetch

__all__ = [
    "Dataset", "TensorDataset", "Subset", "DataLoader",
    "load_digits", "load_mnist", "load_fashion_mnist", "load_dataset", "DATASET_NAMES",
    "CLASSES", "DIGITS_CLASSES", "MNIST_CLASSES", "FASHION_MNIST_CLASSES",
    "mean_std", "normalize", "split_indices", "train_val_split", "stratified_split_indices",
    "IdxError", "read_idx", "write_idx",
    "DownloadError", "ChecksumError", "CacheWriteError", "data_root", "dataset_dir", "fetch",
]
