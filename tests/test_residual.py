"""``nn.Residual``, ``nn.fuse_conv_bn``, module buffers, and the ResNet example in docs/.

References: the same block written with PyTorch modules (forward, two rounds of
backward with accumulated gradients, state_dicts), a hand-written sum of the two paths'
gradients, and ``torch.nn.utils.fusion.fuse_conv_bn_eval``.
"""
from __future__ import annotations

import os
import runpy

import numpy as np
import pytest

import cyconv
from cyconv import nn
from conftest import TESTS_DIR, to_numpy, torch_or_skip

EXAMPLE = os.path.join(os.path.dirname(TESTS_DIR), "docs", "resnet_example.py")


def _block(c_in, c_out, stride, dtype=np.float32):
    body = nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False, dtype=dtype),
                         nn.BatchNorm2d(c_out, dtype=dtype), nn.ReLU(),
                         nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False, dtype=dtype),
                         nn.BatchNorm2d(c_out, dtype=dtype))
    shortcut = None
    if stride != 1 or c_in != c_out:
        shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False, dtype=dtype),
                                 nn.BatchNorm2d(c_out, dtype=dtype))
    return nn.Residual(body, shortcut)


def _torch_block(torch, c_in, c_out, stride):
    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Sequential(
                torch.nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False),
                torch.nn.BatchNorm2d(c_out), torch.nn.ReLU(),
                torch.nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), torch.nn.BatchNorm2d(c_out))
            self.shortcut = None
            if stride != 1 or c_in != c_out:
                self.shortcut = torch.nn.Sequential(
                    torch.nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                    torch.nn.BatchNorm2d(c_out))

        def forward(self, x):
            return self.body(x) + (x if self.shortcut is None else self.shortcut(x))

    return Block().double()


@pytest.mark.parametrize("c_in, c_out, stride", [(4, 4, 1), (4, 6, 2)])
def test_residual_block_matches_torch_over_two_steps_and_eval(c_in, c_out, stride):
    torch = torch_or_skip()
    theirs = _torch_block(torch, c_in, c_out, stride)
    with torch.no_grad():
        for m in theirs.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    ours = _block(c_in, c_out, stride, np.float64)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    rng = np.random.default_rng(0)
    for step in range(3):
        if step == 2:
            ours.eval()
            theirs.eval()
        x = rng.standard_normal((2, c_in, 6, 6))
        tx = torch.from_numpy(x).requires_grad_()
        ty = theirs(tx)
        gy = rng.standard_normal(tuple(ty.shape))
        ty.backward(torch.from_numpy(gy))
        y = ours(x)
        gx = ours.backward(gy)
        np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-10, atol=1e-10)
        tparams = dict(theirs.named_parameters())
        for name, p in ours.named_parameters():
            np.testing.assert_allclose(p.grad, tparams[name].grad.numpy(), rtol=1e-9,
                                       atol=1e-10, err_msg=f"step {step} {name}")
        for key, value in theirs.state_dict().items():
            np.testing.assert_allclose(ours.state_dict()[key], value.numpy(), rtol=1e-10,
                                       atol=1e-12, err_msg=key)


def test_residual_backward_sums_both_paths_without_torch():
    cyconv.manual_seed(0)
    body = nn.Sequential(nn.Linear(5, 5, dtype=np.float64), nn.Tanh())
    shortcut = nn.Linear(5, 5, bias=False, dtype=np.float64)
    block = nn.Residual(body, shortcut)
    x = np.random.default_rng(1).standard_normal((3, 5))
    gy = np.random.default_rng(2).standard_normal((3, 5))
    y = block(x)
    np.testing.assert_allclose(y, body(x) + shortcut(x))
    gx = block.backward(gy)
    body(x)
    shortcut(x)
    np.testing.assert_allclose(gx, body.backward(gy) + shortcut.backward(gy))
    assert list(block.state_dict()) == ["body.0.weight", "body.0.bias", "shortcut.weight"]
    identity = nn.Residual(nn.Tanh())
    np.testing.assert_allclose(identity(x), np.tanh(x) + x)
    np.testing.assert_allclose(identity.backward(gy), gy * (1 - np.tanh(x) ** 2) + gy)
    assert list(identity.state_dict()) == []


def test_residual_errors():
    with pytest.raises(TypeError, match=r"^Residual: body must be a cyconv.nn.Module, got int$"):
        nn.Residual(3)
    with pytest.raises(TypeError, match=r"^Residual: shortcut must be a cyconv.nn.Module"):
        nn.Residual(nn.ReLU(), "x")
    block = nn.Residual(nn.Conv2d(2, 3, 1))
    with pytest.raises(ValueError, match=r"^Residual: the body's output \(1, 3, 4, 4\) and the "
                                         r"shortcut's \(1, 2, 4, 4\) differ"):
        block(np.zeros((1, 2, 4, 4), np.float32))


@pytest.mark.parametrize("nd, bias, affine", [(2, False, True), (2, True, True),
                                              (1, True, False), (3, False, True)])
def test_fuse_conv_bn_equals_conv_then_bn_in_eval(nd, bias, affine):
    cyconv.manual_seed(3)
    conv = getattr(nn, f"Conv{nd}d")(3, 4, 3, stride=2, padding=1, bias=bias, dtype=np.float64)
    bn = getattr(nn, f"BatchNorm{nd}d")(4, affine=affine, dtype=np.float64)
    rng = np.random.default_rng(4)
    bn.train()
    for _ in range(3):                               # non-trivial running statistics
        bn(conv(rng.standard_normal((4, 3) + (7,) * nd) * 2 + 1))
    if affine:
        bn.weight.data[:] = rng.uniform(0.5, 1.5, 4)
        bn.bias.data[:] = rng.standard_normal(4)
    bn.eval()
    fused = nn.fuse_conv_bn(conv, bn)
    assert type(fused) is type(conv) and fused is not conv
    assert list(fused.state_dict()) == ["weight", "bias"]
    x = rng.standard_normal((2, 3) + (6,) * nd)
    np.testing.assert_allclose(fused(x), bn(conv(x)), rtol=1e-12, atol=1e-12)
    assert (conv.bias is None) == (not bias)               # conv itself is unchanged
    torch = pytest.importorskip("torch")
    from torch.nn.utils.fusion import fuse_conv_bn_eval
    tconv = getattr(torch.nn, f"Conv{nd}d")(3, 4, 3, stride=2, padding=1, bias=bias).double()
    tbn = getattr(torch.nn, f"BatchNorm{nd}d")(4, affine=affine).double()
    tconv.load_state_dict({k: torch.from_numpy(v) for k, v in conv.state_dict().items()})
    tbn.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in bn.state_dict().items()})
    tfused = fuse_conv_bn_eval(tconv.eval(), tbn.eval())
    for key, value in tfused.state_dict().items():
        np.testing.assert_allclose(fused.state_dict()[key], value.numpy(), rtol=1e-12,
                                   atol=1e-14)


def test_fuse_conv_bn_errors():
    conv = nn.Conv2d(3, 4, 3)
    with pytest.raises(ValueError, match=r"^fuse_conv_bn: bn has num_features=5, but conv has "
                                         r"out_channels=4$"):
        nn.fuse_conv_bn(conv, nn.BatchNorm2d(5))
    with pytest.raises(ValueError, match=r"^fuse_conv_bn: bn has no running statistics"):
        nn.fuse_conv_bn(conv, nn.BatchNorm2d(4, track_running_stats=False))
    with pytest.raises(TypeError, match=r"^fuse_conv_bn: conv must be a Conv1d, Conv2d or "
                                        r"Conv3d, got ConvTranspose2d$"):
        nn.fuse_conv_bn(nn.ConvTranspose2d(3, 4, 3), nn.BatchNorm2d(4))
    with pytest.raises(TypeError, match=r"^fuse_conv_bn: bn must be a BatchNorm1d/2d/3d, got "
                                        r"ReLU$"):
        nn.fuse_conv_bn(conv, nn.ReLU())


def test_replacing_a_child_keeps_its_place():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU())
    model[1]                                                    # noqa: B018
    setattr(model, "1", nn.Identity())
    assert [type(m).__name__ for m in model] == ["Conv2d", "Identity", "ReLU"]


def test_new_layers_move_to_the_gpu(xp):
    if xp is np:
        pytest.skip("needs a GPU")
    model = nn.Sequential(_block(3, 4, 2), nn.GELU(), nn.Dropout(0.2),
                          nn.Upsample(scale_factor=2, mode="bilinear"), nn.SiLU(),
                          nn.AdaptiveMaxPool2d(2), nn.Flatten(), nn.Linear(16, 3),
                          nn.LogSoftmax(1))
    cpu_state = model.state_dict()
    model.to("cuda")
    for key, value in model.state_dict().items():
        assert type(value).__module__.split(".")[0] == "cupy", key
        np.testing.assert_array_equal(to_numpy(value), cpu_state[key])
    x = xp.asarray(np.random.default_rng(5).standard_normal((2, 3, 8, 8)).astype(np.float32))
    y = model(x)
    gx = model.backward(xp.ones_like(y))
    assert gx.shape == x.shape and type(gx).__module__.split(".")[0] == "cupy"


def test_resnet_example_trains_and_fuses():
    result = runpy.run_path(EXAMPLE)["main"](verbose=False)
    losses = result["losses"]
    assert np.mean(losses[-5:]) < 0.75 * np.mean(losses[:5])
    assert result["accuracy"] > 0.3
    assert result["batch_norms"] == (6, 0)
    assert result["fused_max_abs_diff"] < 1e-4


def test_summary_leaves_running_statistics_alone():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
    before = {k: v.copy() for k, v in model.state_dict().items()}
    model.summary((2, 1, 8, 8), file=open(os.devnull, "w"))
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)


def test_buffers_are_registered_saved_and_loaded():
    bn = nn.BatchNorm1d(3)
    assert [k for k, _ in bn.named_buffers()] == ["running_mean", "running_var",
                                                  "num_batches_tracked"]
    assert [k for k, _ in nn.BatchNorm1d(3, track_running_stats=False).named_buffers()] == []
    bn.load_state_dict({"weight": np.full(3, 2.0), "bias": np.zeros(3),
                        "running_mean": np.arange(3.0), "running_var": np.ones(3),
                        "num_batches_tracked": np.array(7)})
    assert bn.running_mean.dtype == np.float32 and int(bn.num_batches_tracked) == 7
    np.testing.assert_array_equal(bn.running_mean, [0, 1, 2])
    with pytest.raises(ValueError, match=r"register_buffer: the name must be a non-empty "
                                         r"string without '.'"):
        bn.register_buffer("a.b", None)
