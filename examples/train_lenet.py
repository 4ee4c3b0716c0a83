"""Train a LeNet-style CNN: the 8x8 digits by default, MNIST with --dataset mnist.

    python examples/train_lenet.py                    # digits, offline, a few seconds
    python examples/train_lenet.py --dataset mnist    # downloads MNIST once (~11 MB)

(`tinygrad-cnn train --model lenet5` does the same with checkpoints, resume and more.)
"""
import argparse
import sys
import time

import tinygrad_cnn as tg
from tinygrad_cnn import nn, optim
from tinygrad_cnn.data import (ChecksumError, DataLoader, DownloadError, TensorDataset, fetch,
                               load_dataset, mean_std, normalize)
from tinygrad_cnn.train import evaluate

parser = argparse.ArgumentParser(description="Train a LeNet-style CNN.")
parser.add_argument("--dataset", default="digits", choices=["digits", "mnist"])
parser.add_argument("--data-dir", help="where MNIST is cached (default: $TINYGRAD_CNN_DATA "
                                       "or ~/.cache/tinygrad_cnn)")
parser.add_argument("--epochs", type=int, default=15)
parser.add_argument("--device", default="cpu", help="cpu or cuda")
parser.add_argument("--fast", action="store_true", help="a few steps only (a smoke test)")
args = parser.parse_args()

# 1. Data: images scaled to [0, 1], then normalised with the training set's statistics.
try:  # in --fast mode never download: skip when the files are not here already
    if args.dataset != "digits":   # both splits' files first: one error names all missing
        fetch(args.dataset, data_dir=args.data_dir, download=not args.fast)
    x_train, y_train = load_dataset(args.dataset, "train", args.data_dir, not args.fast)
    x_test, y_test = load_dataset(args.dataset, "test", args.data_dir, not args.fast)
except FileNotFoundError:
    print(f"skipping: the {args.dataset} files are not downloaded (run without --fast)")
    sys.exit(0)
except ChecksumError as e:   # --fast: a damaged file in the cache, and no download
    sys.exit(f"error: {e}\nRun without --fast to download verified copies in their place.")
except (DownloadError, ImportError) as e:   # offline, or scikit-learn not installed
    sys.exit(f"error: {e}")
mean, std = mean_std(x_train)
train_set = TensorDataset(normalize(x_train, mean, std), y_train)
test_loader = DataLoader(TensorDataset(normalize(x_test, mean, std), y_test), 500,
                         device=args.device)
_, channels, size, _ = x_train.shape                    # (N, 1, 8, 8) or (N, 1, 28, 28)

# 2. The model: two conv + pool stages extract features, three linear layers classify.
#    On 28x28 images the second convolution is "valid" (28 -> 14 -> 10 -> 5), as in
#    LeNet-5; 8x8 digits are too small for that, so there it keeps the size (8 -> 4 -> 4 -> 2).
tg.manual_seed(0)
pad = 0 if size >= 28 else 2
side = (size // 2 + 2 * pad - 4) // 2                   # the side of the last feature maps
model = nn.Sequential(
    nn.Conv2d(channels, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(6, 16, 5, padding=pad), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(),                                      # (N, 16, side, side) -> (N, 16*side*side)
    nn.Linear(16 * side * side, 120), nn.ReLU(),
    nn.Linear(120, 84), nn.ReLU(),
    nn.Linear(84, 10),
).to(args.device)
print(nn.summary(model, (1, channels, size, size), device=args.device))

# 3. Training: mini-batches, cross-entropy, Adam, a fresh shuffle every epoch, and a
#    one-cycle schedule (the learning rate warms up, then anneals towards zero).
loader = DataLoader(train_set, batch_size=32, shuffle=True, seed=0, device=args.device)
epochs, steps = (1, 20) if args.fast else (args.epochs, None)
opt = optim.Adam(model.parameters(), lr=2e-3)
sched = optim.OneCycleLR(opt, max_lr=2e-3, total_steps=epochs * len(loader))
for epoch in range(1, epochs + 1):
    start = time.perf_counter()
    model.train()
    for step, (x, y) in enumerate(loader, 1):
        loss = nn.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()                                # gradients of every parameter
        opt.step()                                     # one Adam update
        sched.step()                                   # the next learning rate
        if step == steps:
            break
    test_loss, test_acc = evaluate(model, test_loader)  # eval mode, no graph
    print(f"epoch {epoch:2d}: last batch loss {loss.item():.4f}, test loss {test_loss:.4f}, "
          f"test accuracy {test_acc:.2%} ({time.perf_counter() - start:.1f} s)")
print(f"final test accuracy: {test_acc:.2%}")
