"""Fully-connected vs locally-connected vs convolutional: the price of weight sharing.

Three first layers turn an 8x8 digit into 16 feature maps of 8x8; the rest
of the network (ReLU, then a linear classifier) is the same.  They differ in
what one output unit sees and whether units share weights:

* fully-connected: every unit sees all 64 pixels, with its own weights;
* locally-connected: every unit sees a 3x3 window, with its own weights;
* convolutional: every unit sees a 3x3 window, and the 64 positions of a
  feature map share one 3x3 filter.

    python examples/fc_vs_local_vs_conv.py [--epochs 20] [--fast]
"""
import argparse

import tinygrad_cnn as tg
from tinygrad_cnn import nn, optim
from tinygrad_cnn.data import DataLoader, TensorDataset, load_digits, mean_std, normalize
from tinygrad_cnn.train import evaluate

parser = argparse.ArgumentParser(description="Weight sharing, made measurable.")
parser.add_argument("--epochs", type=int, default=20)
parser.add_argument("--fast", action="store_true", help="one epoch on 320 images (a smoke test)")
args = parser.parse_args()
epochs = 1 if args.fast else args.epochs

x_train, y_train = load_digits("train")                 # (1437, 1, 8, 8), (1437,)
if args.fast:
    x_train, y_train = x_train[:320], y_train[:320]
x_test, y_test = load_digits("test")                    # (360, 1, 8, 8)
mean, std = mean_std(x_train)
train_set = TensorDataset(normalize(x_train, mean, std), y_train)
test_loader = DataLoader(TensorDataset(normalize(x_test, mean, std), y_test), 360)


class Unflatten(nn.Module):
    """(N, 1024) -> (N, 16, 8, 8): lets a Linear layer output 16 feature maps."""

    def forward(self, x):
        return x.reshape(x.shape[0], 16, 8, 8)


first_layers = {  # builders, called after seeding so every run starts the same
    "fully-connected": lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 16 * 8 * 8),
                                             Unflatten()),
    "locally-connected": lambda: nn.LocallyConnected2d(1, 16, (8, 8), 3, padding=1),
    "convolutional": lambda: nn.Conv2d(1, 16, 3, padding=1),
}

print(f"{'first layer':<18} {'its params':>10} {'all params':>10} {'test acc':>8}")
counts = {}
for name, build in first_layers.items():
    tg.manual_seed(0)  # the same random start for every model
    first = build()
    model = nn.Sequential(first, nn.ReLU(), nn.Flatten(), nn.Linear(16 * 8 * 8, 10))
    opt = optim.Adam(model.parameters(), lr=2e-3)
    for epoch in range(epochs):
        for x, y in DataLoader(train_set, batch_size=32, shuffle=True, seed=epoch):
            loss = nn.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    _, acc = evaluate(model, test_loader)
    n_first = counts[name] = sum(p.size for p in first.parameters())
    n_all = sum(p.size for p in model.parameters())
    print(f"{name:<18} {n_first:>10,} {n_all:>10,} {acc:>8.1%}")

# Same windows, same outputs: sharing one filter per feature map divides the
# first layer's weights by its 64 positions; seeing a 3x3 window instead of
# all 64 pixels divides them again by about 64 / 9.
print(f"\nlocal / conv = {counts['locally-connected'] / counts['convolutional']:.0f}x, "
      f"fully / conv = {counts['fully-connected'] / counts['convolutional']:.0f}x the weights")
# nn.summary prices any convolution in the other two styles: the same counts.
print(nn.summary(nn.Sequential(nn.Conv2d(1, 16, 3, padding=1)), (1, 1, 8, 8)))
