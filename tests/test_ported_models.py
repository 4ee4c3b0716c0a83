"""Small CNNs ported from PyTorch, trained side by side with PyTorch's originals.

Each model is written once, against a namespace that holds either library's
``nn``, functional module and tensor constructors, so the two are the same
code; the same weights are copied across through ``state_dict`` and both are
trained a few steps in float64.  Outputs, losses, every parameter's gradient
and, after each optimiser and scheduler step, every parameter and running
statistic must agree to 1e-10 relative, and so must the outputs in
evaluation mode at the end:

- a ResNet (stem convolution, BatchNorm, max pooling, BasicBlocks with an
  identity and a strided 1x1 shortcut, global average pooling, a linear head),
  SGD with Nesterov momentum and weight decay, OneCycleLR (cycling the
  momentum) or CosineAnnealingLR, label smoothing;
- a U-Net (GroupNorm or BatchNorm blocks, max pooling down, bilinear or nearest
  ``interpolate`` or ConvTranspose2d up, skip connections joined by ``cat``, a
  1x1 head), Adam and CosineAnnealingLR, per-pixel cross-entropy with
  ``ignore_index``;
- a MobileNet-style stack (depthwise convolutions, ReLU6, Hardswish, SiLU,
  Dropout whose mask PyTorch's side takes from ours), AdamW with amsgrad and
  OneCycleLR;
- ConvNeXt blocks (depthwise 7x7, LayerNorm over channels after a permute, an
  MLP with GELU, a learned layer scale), AdamW over two parameter groups.

The inputs are random normals: ties in max pooling and values at ReLU's kink,
where the libraries may legitimately differ, have probability zero.  Without
torch these tests skip.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import tinygrad_cnn as tg
from tinygrad_cnn import checkpoint, functional, nn, optim

RTOL = 1e-10


def import_torch():
    return pytest.importorskip("torch")


def libraries(torch):
    ours = SimpleNamespace(nn=nn, F=functional, optim=optim, cat=tg.cat, ones=tg.ones,
                           tensor=tg.tensor)
    theirs = SimpleNamespace(nn=torch.nn, F=torch.nn.functional, optim=torch.optim,
                             cat=torch.cat, ones=torch.ones,
                             tensor=lambda a: torch.tensor(np.asarray(a)))
    return ours, theirs


# ---- the models, written once for either library ------------------------------------
def resnet(L):
    class BasicBlock(L.nn.Module):
        def __init__(self, cin, cout, stride=1):
            super().__init__()
            self.conv1 = L.nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = L.nn.BatchNorm2d(cout)
            self.conv2 = L.nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = L.nn.BatchNorm2d(cout)
            self.downsample = None
            if stride != 1 or cin != cout:
                self.downsample = L.nn.Sequential(L.nn.Conv2d(cin, cout, 1, stride, bias=False),
                                                  L.nn.BatchNorm2d(cout))

        def forward(self, x):
            out = L.F.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            identity = x if self.downsample is None else self.downsample(x)
            return L.F.relu(out + identity)

    class ResNet(L.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = L.nn.Conv2d(3, 4, 3, 1, 1, bias=False)
            self.bn1 = L.nn.BatchNorm2d(4)
            self.maxpool = L.nn.MaxPool2d(3, 2, 1)
            self.layer1 = BasicBlock(4, 4)
            self.layer2 = BasicBlock(4, 8, stride=2)
            self.avgpool = L.nn.AdaptiveAvgPool2d((1, 1))
            self.fc = L.nn.Linear(8, 5)

        def forward(self, x):
            x = self.maxpool(L.F.relu(self.bn1(self.conv1(x))))
            x = self.layer2(self.layer1(x))
            return self.fc(self.avgpool(x).flatten(1))

    return ResNet()


def unet(L, up, norm):
    def block(cin, cout):
        make_norm = (lambda c: L.nn.GroupNorm(2, c)) if norm == "group" else L.nn.BatchNorm2d
        return L.nn.Sequential(L.nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                               make_norm(cout), L.nn.ReLU(),
                               L.nn.Conv2d(cout, cout, 3, padding=1, bias=False),
                               make_norm(cout), L.nn.ReLU())

    class UNet(L.nn.Module):
        def __init__(self):
            super().__init__()
            self.enc1, self.enc2, self.mid = block(3, 4), block(4, 8), block(8, 8)
            self.pool = L.nn.MaxPool2d(2)
            if up == "transposed":
                self.up2 = L.nn.ConvTranspose2d(8, 8, 2, stride=2)
                self.up1 = L.nn.ConvTranspose2d(8, 4, 2, stride=2)
                self.dec2, self.dec1 = block(16, 8), block(8, 4)
            else:
                self.dec2, self.dec1 = block(16, 8), block(12, 4)
            self.head = L.nn.Conv2d(4, 3, 1)

        def upsample(self, x, skip, layer):
            if up == "transposed":
                return getattr(self, layer)(x)
            if up == "bilinear":
                return L.F.interpolate(x, size=tuple(skip.shape[-2:]), mode="bilinear",
                                       align_corners=False)
            return L.F.interpolate(x, scale_factor=2, mode="nearest")

        def forward(self, x):
            e1 = self.enc1(x)
            e2 = self.enc2(self.pool(e1))
            m = self.mid(self.pool(e2))
            d2 = self.dec2(L.cat([self.upsample(m, e2, "up2"), e2], dim=1))
            d1 = self.dec1(L.cat([self.upsample(d2, e1, "up1"), e1], dim=1))
            return self.head(d1)

    return UNet()


def mobilenet(L, dropout):
    return L.nn.Sequential(
        L.nn.Conv2d(3, 8, 3, 2, 1, bias=False), L.nn.BatchNorm2d(8), L.nn.Hardswish(),
        L.nn.Conv2d(8, 16, 1, bias=False), L.nn.BatchNorm2d(16), L.nn.ReLU6(),
        L.nn.Conv2d(16, 16, 3, 1, 1, groups=16, bias=False), L.nn.BatchNorm2d(16), L.nn.ReLU6(),
        L.nn.Conv2d(16, 8, 1, bias=False), L.nn.BatchNorm2d(8),
        L.nn.Conv2d(8, 8, 5, 2, 2, groups=8), L.nn.SiLU(),
        L.nn.Conv2d(8, 16, 1), L.nn.Hardswish(),
        L.nn.AdaptiveAvgPool2d(1), L.nn.Flatten(), dropout, L.nn.Linear(16, 5))


def convnext(L):
    class Block(L.nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.dwconv = L.nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
            self.norm = L.nn.LayerNorm(dim, eps=1e-6)
            self.pwconv1 = L.nn.Linear(dim, 4 * dim)
            self.act = L.nn.GELU()
            self.pwconv2 = L.nn.Linear(4 * dim, dim)
            self.gamma = L.nn.Parameter(0.1 * L.ones(dim))

        def forward(self, x):
            y = self.dwconv(x).permute(0, 2, 3, 1)           # (N, H, W, C)
            y = self.pwconv2(self.act(self.pwconv1(self.norm(y))))
            return x + (self.gamma * y).permute(0, 3, 1, 2)  # (N, C, H, W)

    class ConvNeXt(L.nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = L.nn.Conv2d(3, 8, 2, stride=2)
            self.stem_norm = L.nn.GroupNorm(1, 8)
            self.blocks = L.nn.Sequential(Block(8), Block(8))
            self.head_norm = L.nn.LayerNorm(8)
            self.head = L.nn.Linear(8, 5)

        def forward(self, x):
            x = self.blocks(self.stem_norm(self.stem(x)))
            return self.head(self.head_norm(x.mean((-2, -1))))

    return ConvNeXt()


def decay_groups(named):
    """Weight decay for the matrices and kernels only, as ConvNeXt's recipe has it."""
    decay, no_decay = [], []
    for _, p in named:
        (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}]


# ---- running both -------------------------------------------------------------------
def port(torch, build):
    """PyTorch's model (normalisation affines drawn away from 1 and 0, so that they
    matter) in float64, and ours with its weights, copied through state_dict."""
    ours, theirs = libraries(torch)
    torch.manual_seed(0)
    original = build(theirs).double()
    with torch.no_grad():
        for m in original.modules():
            if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.GroupNorm, torch.nn.LayerNorm)):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    ported = build(ours).double()
    result = ported.load_state_dict({k: v.numpy() for k, v in original.state_dict().items()})
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert ported.num_parameters() == sum(p.numel() for p in original.parameters())
    return ported, original


def assert_close(ours, theirs, what):
    np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=RTOL * np.abs(theirs).max(),
                               err_msg=what)


def assert_same_state(ported, original, what):
    theirs = dict(original.named_parameters())
    for name, p in ported.named_parameters():
        assert_close(p.numpy(), theirs[name].detach().numpy(), f"{what}: {name}")
    theirs = dict(original.named_buffers())
    for name, b in ported.named_buffers():
        assert_close(b.numpy(), theirs[name].numpy(), f"{what}: {name}")


def train_side_by_side(torch, ported, original, make_opt, make_sched, batches, loss_kwargs,
                       before_forward=None):
    """Train both on ``batches`` and compare after every step, then in evaluation mode."""
    ours, theirs = libraries(torch)
    opt, topt = make_opt(ours, ported), make_opt(theirs, original)
    sched, tsched = make_sched(ours, opt), make_sched(theirs, topt)
    ported.train(), original.train()
    for step, (x, y) in enumerate(batches):
        out = ported(tg.tensor(x))
        if before_forward is not None:
            before_forward()
        tout = original(torch.tensor(x))
        loss = nn.cross_entropy(out, tg.tensor(y), **loss_kwargs)
        tloss = torch.nn.functional.cross_entropy(tout, torch.tensor(y), **loss_kwargs)
        opt.zero_grad(), topt.zero_grad()
        loss.backward(), tloss.backward()
        assert_close(out.numpy(), tout.detach().numpy(), f"output, step {step}")
        assert_close(loss.numpy(), tloss.detach().numpy(), f"loss, step {step}")
        grads = dict(original.named_parameters())
        for name, p in ported.named_parameters():
            assert_close(p.grad.numpy(), grads[name].grad.numpy(), f"step {step}: {name}.grad")
        opt.step(), topt.step()
        sched.step(), tsched.step()
        assert_close(sched.get_last_lr(), tsched.get_last_lr(), f"lr after step {step}")
        assert_same_state(ported, original, f"after step {step}")
    ported.eval(), original.eval()
    x = batches[0][0]
    with tg.no_grad(), torch.no_grad():
        assert_close(ported(tg.tensor(x)).numpy(), original(torch.tensor(x)).numpy(), "eval")
    return opt, sched


def batches(shape, classes, target_shape=(), steps=3, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(shape), rng.integers(0, classes, (shape[0],) + target_shape))
            for _ in range(steps)]


def sgd(L, model):
    return L.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4,
                       nesterov=True)


SCHEDULES = {
    "one-cycle": lambda L, opt: L.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.2,
                                                                total_steps=4),
    "cosine": lambda L, opt: L.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=3,
                                                                    eta_min=1e-3),
}


# ---- the tests ----------------------------------------------------------------------
@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
def test_resnet_trains_as_in_torch(schedule):
    torch = import_torch()
    ported, original = port(torch, resnet)
    train_side_by_side(torch, ported, original, sgd, SCHEDULES[schedule],
                       batches((4, 3, 12, 12), 5), dict(label_smoothing=0.1))


@pytest.mark.parametrize("up, norm", [("bilinear", "group"), ("nearest", "batch"),
                                      ("transposed", "batch")])
def test_unet_trains_as_in_torch(up, norm):
    torch = import_torch()
    ported, original = port(torch, lambda L: unet(L, up, norm))
    data = batches((2, 3, 8, 8), 3, (8, 8))
    for _, y in data:
        y[:, :2] = 255                          # an unlabelled band, as in segmentation
    train_side_by_side(
        torch, ported, original,
        lambda L, m: L.optim.Adam(m.parameters(), lr=1e-2, weight_decay=1e-4),
        lambda L, opt: L.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=3),
        data, dict(ignore_index=255))


def test_mobilenet_block_trains_as_in_torch():
    torch = import_torch()

    class TakenMask(torch.nn.Module):
        """PyTorch's side of the dropout: the mask ours drew, scaled as ours."""

        mask = None

        def forward(self, x):
            return x * self.mask if self.training else x

    taken = TakenMask()
    ported, original = port(torch, lambda L: mobilenet(L, nn.Dropout(0.25) if L.nn is nn
                                                       else taken))
    seen = {}
    ported[17].register_forward_hook(lambda m, args, out: seen.update(x=args[0], y=out))

    def share_mask():
        x, y = seen["x"].numpy(), seen["y"].numpy()
        kept = y != 0
        assert 0 < kept.mean() < 1 and np.allclose(y[kept], x[kept] / 0.75, rtol=1e-15)
        taken.mask = torch.tensor(kept / 0.75)

    train_side_by_side(
        torch, ported, original,
        lambda L, m: L.optim.AdamW(m.parameters(), lr=3e-3, weight_decay=0.05, amsgrad=True),
        lambda L, opt: L.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=4),
        batches((8, 3, 16, 16), 5), {}, before_forward=share_mask)


def test_convnext_blocks_train_as_in_torch():
    torch = import_torch()
    ported, original = port(torch, convnext)
    train_side_by_side(
        torch, ported, original,
        lambda L, m: L.optim.AdamW(decay_groups(m.named_parameters()), lr=4e-3,
                                   betas=(0.9, 0.99)),
        lambda L, opt: L.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=3),
        batches((2, 3, 8, 8), 5), dict(label_smoothing=0.1))


def test_a_ported_resnet_resumes_from_a_checkpoint_as_if_never_stopped(tmp_path):
    """Model (running statistics included), SGD momentum and OneCycleLR saved mid-run
    with ``checkpoint`` and loaded into fresh objects: the next steps give the same
    weights, to the bit, as the uninterrupted run; ``summary`` leaves them as they are."""
    ours = SimpleNamespace(nn=nn, F=functional, optim=optim)
    data = batches((4, 3, 12, 12), 5, steps=4, seed=1)

    def fresh():
        tg.manual_seed(0)
        model = resnet(ours).double()
        opt = sgd(ours, model)
        return model, opt, SCHEDULES["one-cycle"](ours, opt)

    def train(model, opt, sched, steps):
        model.train()
        for x, y in steps:
            loss = nn.cross_entropy(model(tg.tensor(x)), tg.tensor(y), label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()

    model, opt, sched = fresh()
    train(model, opt, sched, data)
    want = {k: v.numpy() for k, v in model.state_dict().items()}
    model, opt, sched = fresh()
    train(model, opt, sched, data[:2])
    path = checkpoint.save(tmp_path / "run.npz", {"model": model.state_dict(),
                                                  "opt": opt.state_dict(),
                                                  "sched": sched.state_dict()})
    saved = checkpoint.load(path)
    model, opt, sched = fresh()
    model.load_state_dict(saved["model"])
    opt.load_state_dict(saved["opt"])
    sched.load_state_dict(saved["sched"])
    summary = nn.summary(model, (1, 3, 12, 12))
    assert summary.total_params == model.num_parameters()
    assert summary.chain_break == "layer2.downsample.0" and model.training
    train(model, opt, sched, data[2:])
    got = model.state_dict()
    assert list(got) == list(want)
    for k, v in got.items():
        np.testing.assert_array_equal(v.numpy(), want[k], err_msg=k)
