"""Write your own differentiable op, and let gradcheck tell you if its backward is right.

    python examples/custom_op.py
"""
import argparse

import numpy as np

import tinygrad_cnn as tg

parser = argparse.ArgumentParser(description="A custom op, checked.")
parser.add_argument("--fast", action="store_true", help="(everything here is fast already)")
parser.parse_args()


class Softplus(tg.Function):
    """y = log(1 + exp(x));  dy/dx = sigmoid(x)"""

    def forward(self, x):
        # forward sees raw arrays: use self.xp (NumPy or CuPy), never np, so the
        # op runs on every device.  logaddexp(0, x) = log(exp(0) + exp(x)),
        # computed without overflow for large x.
        return self.xp.logaddexp(0, x)

    def backward(self, grad_out):
        # backward returns one gradient per input, built from Tensor ops, so it
        # is differentiable again: that is what makes second derivatives work.
        x, = self.inputs
        return grad_out * x.sigmoid()       # the chain rule: upstream * local derivative


class WrongSoftplus(Softplus):
    """The same forward, with a classic mistake in backward."""

    def backward(self, grad_out):
        x, = self.inputs
        return x.sigmoid()                  # forgot to multiply by grad_out


def softplus(x):
    return Softplus.apply(x)                # apply() records the op in the graph


x = tg.tensor([-30.0, -1.0, 0.0, 2.0, 30.0], requires_grad=True)
y = softplus(x)
y.sum().backward()
print("x          ", x.numpy())
print("softplus(x)", y.numpy())
print("gradient   ", x.grad.numpy(), "(= sigmoid(x))")

# gradcheck perturbs each input element by +-eps, measures the change of the
# output (in float64) and compares it with what backward says.  It uses a
# random upstream gradient, so forgetting grad_out cannot go unnoticed.
tg.manual_seed(0)
inputs = tg.randn(3, 4, dtype="float64", requires_grad=True)
print("gradcheck(Softplus):     ", tg.gradcheck(softplus, inputs))
print("gradgradcheck(Softplus): ", tg.gradgradcheck(softplus, inputs))
try:
    tg.gradcheck(WrongSoftplus.apply, inputs)
except tg.GradcheckError as e:
    print("gradcheck(WrongSoftplus) fails, as it should:\n   ", e)

# The op works like any other: here in a tiny loss, mean(softplus(x @ w)^2), and its gradient.
w = tg.tensor(np.ones((4, 1)), requires_grad=True)
loss = (softplus(inputs.detach() @ w) ** 2).mean()
loss.backward()
print(f"loss {loss.item():.4f}, |dloss/dw| = {np.linalg.norm(w.grad.numpy()):.4f}")
