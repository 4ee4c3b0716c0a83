"""The model zoo of the ``tinygrad-cnn`` command, built from ``nn`` layers.

Every builder takes the image shape ``(C, H, W)`` and the number of
classes, so one architecture serves the 8x8 digits and 28x28 MNIST.  On
28x28 inputs the convolutions are "valid" as in the literature; on smaller
images they are padded to keep their size ("same"), because two valid 5x5
convolutions do not fit in an 8x8 image.  The convolutional models halve
the image twice, so they need images of at least 4x4; a smaller image is
refused with a ``ValueError`` that says so.
"""
from __future__ import annotations

import numbers

from . import nn
from ._checks import check_int


def _pad(kernel_size, image_hw):
    return 0 if min(image_hw) >= 28 else kernel_size // 2


def _out(size, kernel_size, padding, pool=2):
    return (size + 2 * padding - kernel_size + 1) // pool


# LeNet-5 saw 32x32 images; padding 2 gives 28x28 inputs the same geometry.
_LENET5_PAD1 = 2


def _cnn_features(h, w):
    """(H, W) of the feature maps ``cnn`` flattens, for an H x W image."""
    return h // 4, w // 4


def _lenet5_features(h, w):
    p2 = _pad(5, (h, w))
    return tuple(_out(_out(s, 5, _LENET5_PAD1), 5, p2) for s in (h, w))


def _nielsen_features(h, w):
    p = _pad(5, (h, w))
    return tuple(_out(_out(s, 5, p), 5, p) for s in (h, w))


def _check_fits(name, image_shape, features):
    """Refuse an image that the convolutions and poolings shrink to nothing.

    Otherwise the first sign would be a ``Linear`` with 0 inputs, an error
    that says nothing about the image.  ``features(h, w)`` gives the size of
    the feature maps that are flattened.
    """
    c, h, w = image_shape
    fh, fw = features(h, w)
    if fh >= 1 and fw >= 1:
        return
    smallest = next(s for s in range(1, 10_000) if min(features(s, s)) >= 1)
    raise ValueError(f"model {name!r} needs images of at least {smallest}x{smallest}, got "
                     f"image shape {tuple(image_shape)}: its convolutions and poolings shrink "
                     f"an image of {h}x{w} to feature maps of {fh}x{fw}")


def cnn(image_shape=(1, 8, 8), num_classes=10):
    """The default CNN: conv3x3 32 -> relu -> maxpool2 -> conv3x3 64 -> relu ->
    maxpool2 -> linear 128 -> relu -> dropout -> linear ``num_classes``."""
    _check_fits("cnn", image_shape, _cnn_features)
    c, h, w = image_shape
    h2, w2 = _cnn_features(h, w)
    return nn.Sequential(
        nn.Conv2d(c, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * h2 * w2, 128), nn.ReLU(), nn.Dropout(0.25),
        nn.Linear(128, num_classes),
    )


def mlp(image_shape=(1, 8, 8), num_classes=10, hidden=100):
    """A fully-connected network: flatten -> linear ``hidden`` -> relu -> linear."""
    c, h, w = image_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, hidden), nn.ReLU(),
                         nn.Linear(hidden, num_classes))


def lenet5(image_shape=(1, 28, 28), num_classes=10):
    """LeNet-5 with ReLU and max-pooling: conv5x5 6 -> pool -> conv5x5 16 ->
    pool -> linear 120 -> linear 84 -> linear ``num_classes``."""
    _check_fits("lenet5", image_shape, _lenet5_features)
    c, h, w = image_shape
    p1 = _LENET5_PAD1
    p2 = _pad(5, (h, w))
    h2, w2 = _lenet5_features(h, w)
    return nn.Sequential(
        nn.Conv2d(c, 6, 5, padding=p1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5, padding=p2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * h2 * w2, 120), nn.ReLU(),
        nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, num_classes),
    )


def _nielsen(name, image_shape, num_classes, layer):
    _check_fits(name, image_shape, _nielsen_features)
    c, h, w = image_shape
    p = _pad(5, (h, w))
    h1, w1 = _out(h, 5, p), _out(w, 5, p)
    h2, w2 = _nielsen_features(h, w)
    return nn.Sequential(
        layer(c, 20, (h, w), p), nn.ReLU(), nn.MaxPool2d(2),
        layer(20, 40, (h1, w1), p), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(40 * h2 * w2, 100), nn.ReLU(),
        nn.Linear(100, num_classes),
    )


def nielsen(image_shape=(1, 28, 28), num_classes=10):
    """The network of chapter 6 of Nielsen's "Neural Networks and Deep Learning":
    conv5x5 20 -> maxpool2 -> conv5x5 40 -> maxpool2 -> linear 100 -> linear
    ``num_classes``, with ReLU."""
    return _nielsen("nielsen", image_shape, num_classes,
                    lambda cin, cout, size, p: nn.Conv2d(cin, cout, 5, padding=p))


def local(image_shape=(1, 28, 28), num_classes=10):
    """``nielsen`` with locally-connected layers in place of the convolutions:
    the same windows, but every output position has its own weights."""
    return _nielsen("local", image_shape, num_classes,
                    lambda cin, cout, size, p: nn.LocallyConnected2d(cin, cout, size, 5, padding=p))


MODELS = {"cnn": cnn, "mlp": mlp, "lenet5": lenet5, "nielsen": nielsen, "local": local}


def _checked(name, image_shape):
    """``image_shape`` as a tuple, after the checks :func:`build` makes."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    image_shape = tuple(image_shape)
    if len(image_shape) != 3 or not all(isinstance(s, numbers.Integral) and s >= 1
                                        and not isinstance(s, bool) for s in image_shape):
        raise ValueError(f"model {name!r}: image_shape must be (C, H, W), three positive "
                         f"ints, got {image_shape}")
    return image_shape


def build(name, image_shape, num_classes=10):
    """Build model ``name`` for images of ``image_shape`` = (C, H, W).

    A ``ValueError`` names the model and the smallest image it accepts when
    the image is too small for its convolutions and poolings.
    """
    return MODELS[name](_checked(name, image_shape), num_classes)


# The feature-map size each convolutional model flattens, as its builder has it.
_FEATURES = {"cnn": _cnn_features, "lenet5": _lenet5_features, "nielsen": _nielsen_features,
             "local": _nielsen_features}


def _linear(n_in, n_out):
    return n_in * n_out + n_out


def _conv(c_in, c_out, k):
    return c_out * c_in * k * k + c_out


def _local(c_in, c_out, h, w, k, p):
    oh, ow = h + 2 * p - k + 1, w + 2 * p - k + 1   # a weight and a bias per output position
    return c_out * oh * ow * (c_in * k * k + 1)


def parameter_count(name, image_shape, num_classes=10):
    """The number of parameters of ``build(name, image_shape, num_classes)``,
    worked out without building the model, with the errors ``build`` raises
    for bad arguments.

    Loading a checkpoint uses it to refuse a declared image shape whose model
    would not fit in memory before allocating it.
    """
    c, h, w = _checked(name, image_shape)
    k = check_int("Linear: out_features", num_classes, low=1)   # as the last layer says
    if name == "mlp":
        return _linear(c * h * w, 100) + _linear(100, k)
    features = _FEATURES.get(name)
    if features is None:   # a model added to MODELS without a formula here
        raise NotImplementedError(f"parameter_count has no formula for model {name!r}; "
                                  f"add one beside its builder")
    _check_fits(name, (c, h, w), features)
    h2, w2 = features(h, w)
    if name == "cnn":
        return _conv(c, 32, 3) + _conv(32, 64, 3) + _linear(64 * h2 * w2, 128) + _linear(128, k)
    if name == "lenet5":
        return (_conv(c, 6, 5) + _conv(6, 16, 5) + _linear(16 * h2 * w2, 120)
                + _linear(120, 84) + _linear(84, k))
    p = _pad(5, (h, w))
    if name == "nielsen":
        first, second = _conv(c, 20, 5), _conv(20, 40, 5)
    else:   # local, the one other name _FEATURES holds
        first = _local(c, 20, h, w, 5, p)
        second = _local(20, 40, _out(h, 5, p), _out(w, 5, p), 5, p)
    return first + second + _linear(40 * h2 * w2, 100) + _linear(100, k)
