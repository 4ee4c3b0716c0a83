"""Autograd basics: scalars, tensors, the graph, a second derivative, gradcheck.

    python examples/autograd_basics.py
"""
import argparse

import numpy as np

import tinygrad_cnn as tg

parser = argparse.ArgumentParser(description="Autograd basics, step by step.")
parser.add_argument("--fast", action="store_true", help="(everything here is fast already)")
parser.parse_args()

# 1. A scalar.  y = x^2 + 3x, so dy/dx = 2x + 3, which is 7 at x = 2.
x = tg.tensor(2.0, requires_grad=True)
y = x * x + 3 * x
y.backward()  # the reverse sweep: fills x.grad with dy/dx
print(f"1. y = {y.item()}, dy/dx = {x.grad.item()} (2x + 3 = 7)")

# 2. Tensors.  A tiny layer and a loss; each gradient has its tensor's shape.
tg.manual_seed(0)
x = tg.randn(4, 3)                        # 4 samples, 3 features (no gradient needed)
w = tg.randn(3, 2, requires_grad=True)    # weights
b = tg.zeros(2, requires_grad=True)       # biases
loss = ((x @ w + b).tanh() ** 2).mean()
print(f"2. loss = {loss.item():.4f}")

# 3. The graph.  Each result remembers the op that made it (grad_fn) and that
#    op its inputs: walking back from the loss visits the whole computation.
#    (tg.viz.graph(loss).save("graph.svg") draws it, with Graphviz installed.)
names = {id(x): "x", id(w): "w", id(b): "b"}


def show(t, depth=1):
    op = t.grad_fn
    print("   " * depth + (op.name if op else names.get(id(t), "constant")) + f" {t.shape}")
    for parent in (op.inputs if op else ()):
        show(parent, depth + 1)


print("3. the graph behind the loss (each op above its inputs):")
show(loss)
#    ...and the backward pass, one row per op, in the order the sweep ran them.
with tg.viz.trace(names={"x": x, "w": w, "b": b}) as steps:
    loss.backward()
print(steps)
print(f"   w.grad has shape {w.grad.shape}, b.grad has shape {b.grad.shape}")

# 4. A second derivative.  create_graph=True makes the gradient itself a
#    differentiable tensor, so it can be differentiated again.
#    f(x) = x sin x;  f'(x) = sin x + x cos x;  f''(x) = 2 cos x - x sin x.
x = tg.tensor(1.0, dtype="float64", requires_grad=True)
f = x * x.sin()
(df,) = tg.grad(f, x, create_graph=True)
(d2f,) = tg.grad(df, x)
print(f"4. f'(1) = {df.item():.6f} (exact {np.sin(1) + np.cos(1):.6f}), "
      f"f''(1) = {d2f.item():.6f} (exact {2 * np.cos(1) - np.sin(1):.6f})")


# 5. gradcheck: compare every analytic gradient with central finite
#    differences (in float64).  It raises if one disagrees.
def layer(x, w, b):
    return (x @ w + b).tanh()


inputs = (tg.randn(4, 3), w, b)  # only w and b require grad, so only they are checked
ok = tg.gradcheck(layer, inputs)
ok2 = tg.gradgradcheck(layer, inputs)
print(f"5. gradcheck: {ok}, gradgradcheck (second derivatives): {ok2}")
