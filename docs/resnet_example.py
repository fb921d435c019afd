"""A small ResNet built from cyconv layers, trained with explicit backward passes, then
fused for inference.

Run: ``python docs/resnet_example.py`` (a few seconds on one core).  See docs/resnet.md.

* ``basic_block``: two 3x3 convolutions with BatchNorm2d in an ``nn.Residual``; when the
  block halves the resolution (stride 2) or widens the channels, the shortcut is a
  strided 1x1 convolution + BatchNorm2d.
* Training: ``model(x)``, ``loss_fn(logits, y)``, ``model.backward(loss_fn.backward())``,
  ``optimizer.step()`` -- no autograd; every layer, the residual sum included, has its
  own backward.
* Inference: ``fuse`` folds every Conv2d followed by a BatchNorm2d into one Conv2d
  (``nn.fuse_conv_bn``), which gives the eval-mode model's outputs with fewer layers.
"""
from __future__ import annotations

import copy

import numpy as np

import cyconv
from cyconv import nn, optim


def basic_block(c_in, c_out, stride=1):
    """ResNet's BasicBlock: relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))."""
    body = nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out),
        nn.ReLU(),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out))
    shortcut = None
    if stride != 1 or c_in != c_out:
        shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                 nn.BatchNorm2d(c_out))
    return nn.Sequential(nn.Residual(body, shortcut), nn.ReLU())


def resnet(num_classes=10, width=8):
    """A stem, one block at full resolution, one stride-2 block, global pooling, a linear
    classifier: a ResNet in miniature for 8x8 single-channel images."""
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
        basic_block(width, width),
        basic_block(width, 2 * width, stride=2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, num_classes))


def fuse(model):
    """A copy of ``model`` with every Conv2d followed by a BatchNorm2d (in a Sequential)
    folded into one Conv2d, the BatchNorm replaced by an Identity."""
    model = copy.deepcopy(model)

    def visit(m):
        if isinstance(m, nn.Sequential):
            names = list(m._modules)
            for a, b in zip(names, names[1:]):
                conv, bn = m._modules[a], m._modules[b]
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    setattr(m, a, nn.fuse_conv_bn(conv, bn))
                    setattr(m, b, nn.Identity())
        for child in m.children():
            visit(child)

    visit(model)
    return model.eval()


def make_data(n, rng, templates):
    """``n`` noisy 8x8 images of 10 classes (a fixed random pattern per class)."""
    labels = rng.integers(0, len(templates), n)
    images = templates[labels] + 0.8 * rng.standard_normal((n, 1, 8, 8)).astype(np.float32)
    return images.astype(np.float32), labels


def main(steps=30, batch=32, seed=0, verbose=True):
    cyconv.manual_seed(seed)
    rng = np.random.default_rng(seed)
    templates = rng.standard_normal((10, 1, 8, 8)).astype(np.float32)
    x_train, y_train = make_data(512, rng, templates)
    x_test, y_test = make_data(256, rng, templates)

    model = resnet()
    loss_fn = nn.CrossEntropyLoss()
    optimizer = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for step in range(steps):
        idx = rng.integers(0, len(x_train), batch)
        logits = model(x_train[idx])
        loss = loss_fn(logits, y_train[idx])
        optimizer.zero_grad()
        model.backward(loss_fn.backward())
        optimizer.step()
        losses.append(float(loss))
        if verbose and step % 10 == 0:
            print(f"step {step:3d}  loss {losses[-1]:.3f}")

    model.eval()
    logits = model(x_test)
    accuracy = float(np.mean(logits.argmax(1) == y_test))
    fused = fuse(model)
    fused_logits = fused(x_test)
    diff = float(np.max(np.abs(fused_logits - logits)))
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    n_bn_fused = sum(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    if verbose:
        print(f"loss {losses[0]:.3f} -> {losses[-1]:.3f}; test accuracy {accuracy:.2f}")
        print(f"fused: {n_bn} BatchNorm2d -> {n_bn_fused}; max |fused - unfused| = {diff:.2e}")
    return dict(losses=losses, accuracy=accuracy, fused_max_abs_diff=diff,
                batch_norms=(n_bn, n_bn_fused))


if __name__ == "__main__":
    main()
