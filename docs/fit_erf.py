"""Fit the coefficients of the float32 erf in tinygrad_cnn/conv_arrays.py, and check it.

    python docs/fit_erf.py              # fit, print the coefficients as the code holds them
    python docs/fit_erf.py --verify     # the library's float32 and float16 erf against float64
    python docs/fit_erf.py --verify --every 1   # every float32 of [2**-14, 4.3] (~15 s)

The float32 path computes erf(x) = tanh(z) with z = t + t W(t^2), t = x clamped
to [-CLAMP, CLAMP] and W = P/Q a rational function (P of degree DEG_P, Q of
degree DEG_Q with leading coefficient 1):  W(s) is atanh(erf(sqrt(s)))/sqrt(s) - 1.
It is fitted here in float64 with NumPy alone:

* the target W and the weights come from ``math.erf``/``math.erfc`` on 3000
  Chebyshev nodes in x over [0, CLAMP] (plus both ends);
* the weight of a node is the factor by which a relative error of W shows in
  erf: W/(1+W) (z = t + t W) times z sech^2(z) / tanh(z) (tanh flattens
  towards 1), at least 1e-3 of its largest value; so the fit spends its
  degrees where erf is sensitive (|x| below ~2) and only keeps W roughly
  right where tanh is flat;
* the weighted relative error max |w (P/Q - W) / W| is minimised by Lawson's
  algorithm (iteratively reweighted least squares, the weights multiplied
  by the error each round) on the linearised problem P - W Q = 0, divided by
  the previous Q (Sanathanan-Koerner), with P and Q in Chebyshev polynomials
  of s mapped to [-1, 1] for a well-conditioned least-squares problem;
  the best of 300 rounds is kept;
* P and Q are then written in powers of s, Q scaled to a leading
  coefficient of 1 (Horner's rule saves a product), and each coefficient
  rounded to float32, as the float32 evaluation uses them.

The clamp: erf(x) rounds to 1 in float32 from x ~ 3.92; NumPy's float32 tanh
returns 1 from z = 10 (from ~9.01 it would round to 1), and z(4.3) ~ 10.6, so
erf(+-4.3 and beyond, inf included) is exactly +-1.
"""
from __future__ import annotations

import argparse
import math
import os
import sys

import numpy as np
from numpy.polynomial import chebyshev, polynomial

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # run from a checkout without installing

CLAMP, DEG_P, DEG_Q = 4.3, 3, 4
NODES, ROUNDS, WEIGHT_FLOOR = 3000, 300, 1e-3


def target(x):
    """W(x^2) = atanh(erf x)/x - 1 and the weight of each node x >= 0, in float64."""
    w = np.empty_like(x)
    weight = np.empty_like(x)
    for i, v in enumerate(x):
        if v == 0:
            z_over_x, sensitivity = 2 / math.sqrt(math.pi), 1.0
        else:
            # atanh(e) = log1p(2e / (1 - e)) / 2, with 1 - e = erfc(v) (no cancellation)
            z = 0.5 * math.log1p(2 * math.erf(v) / math.erfc(v))
            z_over_x, sensitivity = z / v, z / (math.sinh(z) * math.cosh(z))
        w[i] = z_over_x - 1
        weight[i] = w[i] / z_over_x * sensitivity
    return w, np.maximum(weight, WEIGHT_FLOOR * weight.max())


def fit(clamp=CLAMP, deg_p=DEG_P, deg_q=DEG_Q):
    """(P, Q, weighted error): monomial coefficients in s, highest degree first, Q monic."""
    k = np.arange(NODES)
    x = np.concatenate([[0.0], clamp * (1 - np.cos(np.pi * (k + 0.5) / NODES)) / 2, [clamp]])
    w, weight = target(x)
    u = 2 * (x * x) / clamp ** 2 - 1            # s = x^2 over [0, clamp^2] -> [-1, 1]
    vp, vq = chebyshev.chebvander(u, deg_p), chebyshev.chebvander(u, deg_q)
    # Unknowns: P's deg_p + 1 Chebyshev coefficients, then Q's but the first (fixed at 1).
    a = np.hstack([vp, -w[:, None] * vq[:, 1:]])
    rhs = w * vq[:, 0]
    lawson = np.full(len(x), 1.0 / len(x))
    q_prev = np.ones_like(x)
    best = None
    for _ in range(ROUNDS):
        scale = np.sqrt(lawson) * weight / (w * q_prev)
        coef = np.linalg.lstsq(a * scale[:, None], rhs * scale, rcond=None)[0]
        p_cheb, q_cheb = coef[:deg_p + 1], np.concatenate([[1.0], coef[deg_p + 1:]])
        q_prev = chebyshev.chebval(u, q_cheb)
        err = weight * (chebyshev.chebval(u, p_cheb) / q_prev - w) / w
        if best is None or np.abs(err).max() < best[0]:
            best = (np.abs(err).max(), p_cheb, q_cheb)
        lawson = lawson * np.abs(err)
        lawson /= lawson.sum()
    error, p_cheb, q_cheb = best
    p, q = (_in_powers_of_s(c, clamp) for c in (p_cheb, q_cheb))
    q_values = polynomial.polyval(np.linspace(0, clamp ** 2, 10001), q)
    if not (np.all(q_values > 0) or np.all(q_values < 0)):
        raise RuntimeError("the fitted Q has a zero in [0, clamp^2]")
    p, q = p / q[-1], q / q[-1]
    as_float32 = [float(np.float32(c)) for c in p[::-1]], [float(np.float32(c)) for c in q[::-1]]
    return (*as_float32, error)


def _in_powers_of_s(cheb, clamp):
    """Chebyshev coefficients in u = 2 s / clamp^2 - 1 -> ascending powers of s."""
    out, power = np.zeros(1), np.ones(1)
    u_of_s = np.array([-1.0, 2.0 / clamp ** 2])
    for c in chebyshev.cheb2poly(cheb):
        out = polynomial.polyadd(out, c * power)
        power = polynomial.polymul(power, u_of_s)
    return out


def _show(name, coefs):
    """``name = (...)``: the shortest decimals that give each float32 coefficient back."""
    texts = [str(np.float32(c)) for c in coefs]
    assert all(np.float32(float(t)) == np.float32(c) for t, c in zip(texts, coefs))
    return f"{name} = ({', '.join(texts)})"


def ulp_error(got, want, dtype):
    """|got - want| in units in the last place of ``dtype`` at ``want`` (float64 arrays);
    below the smallest normal number, in its (subnormal) spacing."""
    info = np.finfo(dtype)
    exponent = np.floor(np.log2(np.maximum(np.abs(want), info.smallest_normal)))
    return np.abs(got - want) / np.exp2(exponent - info.nmant)


def verify(every):
    """Max ulp errors of the library's float32 erf (every ``every``-th float32 of
    [2**-14, CLAMP], every 97th below it and from CLAMP to inf) and of its float16 erf
    (every float16), against the library's float64 erf (Cody's, ~1e-16 relative)."""
    from tinygrad_cnn.backend import get_backend
    from tinygrad_cnn.conv_arrays import erf_array
    backend = get_backend("cpu")
    lo, hi = np.float32(2.0 ** -14).view(np.int32), np.float32(CLAMP).view(np.int32)
    worst = (0.0, None)
    for start in range(lo, hi + 1, every << 22):
        bits = np.arange(start, min(start + (every << 22), hi + 1), every, dtype=np.int32)
        x = bits.view(np.float32)
        err = ulp_error(erf_array(backend, x).astype(np.float64),
                        erf_array(backend, x.astype(np.float64)), np.float32)
        if err.max() > worst[0]:
            worst = (float(err.max()), float(x[err.argmax()]))
    print(f"float32, every {every}. float32 of [2**-14, {CLAMP}]: max {worst[0]:.3f} ulp "
          f"at x = {worst[1]!r}")
    rest = np.concatenate([
        np.arange(1, np.float32(2.0 ** -14).view(np.int32), 97, dtype=np.int32).view(np.float32),
        np.arange(hi, np.float32(np.inf).view(np.int32) + 1, 97, dtype=np.int32).view(np.float32)])
    err = ulp_error(erf_array(backend, rest).astype(np.float64),
                    erf_array(backend, rest.astype(np.float64)), np.float32)
    print(f"float32 below 2**-14 (subnormals included) and from {CLAMP} to inf: max "
          f"{err.max():.3f} ulp at x = {float(rest[err.argmax()])!r}")
    half = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
    half = half[np.isfinite(half) & (half >= 0)]
    got = erf_array(backend, half).astype(np.float64)
    want = erf_array(backend, half.astype(np.float64))
    err = ulp_error(got, want, np.float16)
    wrong = got != want.astype(np.float16)
    print(f"float16, every one: max {err.max():.3f} ulp; {wrong.sum()} of {len(half)} not the "
          f"float16 nearest erf(x)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verify", action="store_true",
                        help="measure the library's float32 and float16 erf instead of fitting")
    parser.add_argument("--every", type=int, default=7,
                        help="with --verify: check every n-th float32 (default 7)")
    args = parser.parse_args()
    if args.verify:
        verify(args.every)
        return
    p, q, error = fit()
    print(f"weighted relative error of W: {error:.3g}")
    print(_show("_ERF32_P", p))
    print(_show("_ERF32_Q", q))


if __name__ == "__main__":
    main()
