"""The convolution layers of published networks, for ``python -m cyconv bench --suite networks``.

The benchmark's default table holds one layer of each *kind*; a user runs whole networks,
whose layers are whatever their authors chose: 3 input channels, 7x7 planes with 960
channels, depthwise 5x5 at stride 2, 300-channel text embeddings.  This module lists the
convolution layers of each network below with the number of times the network uses each
one, so that a network's total convolution time can be set against PyTorch's.

Each network is measured at a training batch (every layer in all three passes: forward,
input gradient, weight gradient) and at batch 1 (forward only: inference).  A layer shape
shared by several networks (ResNet-50's stem and ResNeXt-50's, say) is timed once and
counted in each.

What is left out, and why:

* squeeze-and-excitation blocks (EfficientNet): 1x1 convolutions of 1x1 planes, i.e.
  linear layers on (N, C) data; they take well under 1 % of the network's FLOPs;
* ConvNeXt's pointwise MLPs, which the reference implementation runs as ``nn.Linear``;
* the fully connected heads.

Layer names are ``<network>.<layer>``; the sizes follow the reference implementations
(torchvision for ResNet-50, ResNeXt-50 32x4d, MobileNetV2, EfficientNet-B0, ConvNeXt-T
and VGG-16; the papers for the others).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ._bench import BenchShape, shape


@dataclass(frozen=True)
class Network:
    """A network's convolution layers: ``layers`` holds ``(count, BenchShape)`` pairs at
    batch 1; ``batch`` is the training batch at which all three passes are timed."""
    name: str
    batch: int
    layers: tuple
    note: str = ""

    def train_shapes(self):
        """(count, shape at the training batch) per layer."""
        return [(c, dataclasses.replace(s, batch=self.batch, name=f"{s.name}@b{self.batch}"))
                for c, s in self.layers]

    def infer_shapes(self):
        """(count, shape at batch 1) per layer."""
        return [(c, dataclasses.replace(s, name=f"{s.name}@b1")) for c, s in self.layers]


def _net(name, batch, note, *layers):
    """A :class:`Network` from ``(count, layer name, shape arguments...)`` tuples, the
    shape arguments as :func:`cyconv._bench.shape` takes them, minus name and batch."""
    out = []
    for count, lname, *args in layers:
        kw = args.pop() if args and isinstance(args[-1], dict) else {}
        out.append((count, shape(f"{name}.{lname}", 1, *args, **kw)))
    return Network(name, batch, tuple(out), note)


T = {"transposed": True}


def _key(s: BenchShape):
    """What a measurement depends on: everything but the name and the note."""
    return (s.x_shape, s.w_shape, s.stride, s.padding, s.dilation, s.groups, s.transposed,
            s.output_padding, s.inference)


def _merge(entries):
    """(count, name, *args) entries with identical shape arguments merged, counts summed
    (the first name is kept)."""
    found = {}
    for count, name, *args in entries:
        key = _key(shape("", 1, *args))
        if key in found:
            found[key][0] += count
        else:
            found[key] = [count, name, *args]
    return [tuple(v) for v in found.values() if v[0] > 0]


def _bottleneck_stages(widths, blocks, groups):
    """The layers of a torchvision ResNet/ResNeXt bottleneck network after its stem:
    per stage, the first block's 1x1 reduction, strided 3x3 (stride on the 3x3, as
    torchvision's v1.5) and 1x1 projection shortcut, then the other blocks' 1x1
    reduction, 3x3 and every block's 1x1 expansion to 4x the stage's planes."""
    layers = []
    c_in, size = 64, 56
    for stage, (width, n) in enumerate(zip(widths, blocks), 1):
        c_out = 4 * 64 * 2 ** (stage - 1)
        stride = 1 if stage == 1 else 2
        out = size // stride
        tag = f"s{stage}"
        layers += [(1, f"{tag}_reduce_first", c_in, (size, size), width, 1),
                   (1, f"{tag}_3x3" + (f"_s{stride}" if stride > 1 else ""),
                    width, (size, size), width, 3, stride, 1, 1, groups),
                   (1, f"{tag}_shortcut", c_in, (size, size), c_out, 1, stride),
                   (n - 1, f"{tag}_reduce", c_out, (out, out), width, 1),
                   (n - 1, f"{tag}_3x3", width, (out, out), width, 3, 1, 1, 1, groups),
                   (n, f"{tag}_expand", width, (out, out), c_out, 1)]
        c_in, size = c_out, out
    return _merge(layers)


def _inverted_residuals(stem_channels, settings, size):
    """MobileNetV2 / EfficientNet-B0 blocks after the stem: per stage (expand ratio,
    kernel, stride, out channels, repeats), each block a 1x1 expansion (none at ratio 1),
    a depthwise k x k (the stage's stride on the first block) and a 1x1 projection."""
    layers = []
    c_in = stem_channels
    for stage, (t, k, s, c, n) in enumerate(settings, 1):
        for i in range(n):
            stride = s if i == 0 else 1
            hidden, out = c_in * t, size // stride
            if t != 1:
                layers.append((1, f"b{stage}_expand{c_in}", c_in, (size, size), hidden, 1))
            layers.append((1, f"b{stage}_dw{k}x{k}_{hidden}" + (f"_s{stride}" if stride > 1
                                                                  else ""),
                           hidden, (size, size), hidden, k, stride, k // 2, 1, hidden))
            layers.append((1, f"b{stage}_project{hidden}", hidden, (out, out), c, 1))
            c_in, size = c, out
    return _merge(layers)


NETWORKS = (
    _net("resnet50", 8, "ImageNet 224x224, torchvision",
         (1, "stem7x7_s2", 3, (224, 224), 64, 7, 2, 3),
         *_bottleneck_stages((64, 128, 256, 512), (3, 4, 6, 3), 1)),
    _net("resnext50", 8, "ResNeXt-50 32x4d, ImageNet 224x224 (4-32 channels per group)",
         (1, "stem7x7_s2", 3, (224, 224), 64, 7, 2, 3),
         *_bottleneck_stages((128, 256, 512, 1024), (3, 4, 6, 3), 32)),
    _net("mobilenetv2", 16, "ImageNet 224x224, width 1.0",
         (1, "stem3x3_s2", 3, (224, 224), 32, 3, 2, 1),
         *_inverted_residuals(32, ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 3, 2, 32, 3),
                                   (6, 3, 2, 64, 4), (6, 3, 1, 96, 3), (6, 3, 2, 160, 3),
                                   (6, 3, 1, 320, 1)), 112),
         (1, "head1x1", 320, (7, 7), 1280, 1)),
    _net("efficientnet_b0", 16, "ImageNet 224x224 (squeeze-excitation 1x1s left out)",
         (1, "stem3x3_s2", 3, (224, 224), 32, 3, 2, 1),
         *_inverted_residuals(32, ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2),
                                   (6, 3, 2, 80, 3), (6, 5, 1, 112, 3), (6, 5, 2, 192, 4),
                                   (6, 3, 1, 320, 1)), 112),
         (1, "head1x1", 320, (7, 7), 1280, 1)),
    _net("convnext_t", 8, "ConvNeXt-T, ImageNet 224x224 (its pointwise MLPs are Linear)",
         (1, "stem4x4_s4", 3, (224, 224), 96, 4, 4),
         (3, "dw7x7_56", 96, (56, 56), 96, 7, 1, 3, 1, 96),
         (1, "down2x2_56", 96, (56, 56), 192, 2, 2),
         (3, "dw7x7_28", 192, (28, 28), 192, 7, 1, 3, 1, 192),
         (1, "down2x2_28", 192, (28, 28), 384, 2, 2),
         (9, "dw7x7_14", 384, (14, 14), 384, 7, 1, 3, 1, 384),
         (1, "down2x2_14", 384, (14, 14), 768, 2, 2),
         (3, "dw7x7_7", 768, (7, 7), 768, 7, 1, 3, 1, 768)),
    _net("vgg16", 4, "ImageNet 224x224",
         (1, "c1_1", 3, (224, 224), 64, 3, 1, 1),
         (1, "c1_2", 64, (224, 224), 64, 3, 1, 1),
         (1, "c2_1", 64, (112, 112), 128, 3, 1, 1),
         (1, "c2_2", 128, (112, 112), 128, 3, 1, 1),
         (1, "c3_1", 128, (56, 56), 256, 3, 1, 1),
         (2, "c3_2", 256, (56, 56), 256, 3, 1, 1),
         (1, "c4_1", 256, (28, 28), 512, 3, 1, 1),
         (2, "c4_2", 512, (28, 28), 512, 3, 1, 1),
         (3, "c5", 512, (14, 14), 512, 3, 1, 1)),
    _net("unet2d", 4, "U-Net, 3x128x128 input, 64-1024 channels, 'same' 3x3, 2x2 up-convs",
         (1, "e1_1", 3, (128, 128), 64, 3, 1, 1),
         (1, "e1_2", 64, (128, 128), 64, 3, 1, 1),
         (1, "e2_1", 64, (64, 64), 128, 3, 1, 1),
         (1, "e2_2", 128, (64, 64), 128, 3, 1, 1),
         (1, "e3_1", 128, (32, 32), 256, 3, 1, 1),
         (1, "e3_2", 256, (32, 32), 256, 3, 1, 1),
         (1, "e4_1", 256, (16, 16), 512, 3, 1, 1),
         (1, "e4_2", 512, (16, 16), 512, 3, 1, 1),
         (1, "mid_1", 512, (8, 8), 1024, 3, 1, 1),
         (1, "mid_2", 1024, (8, 8), 1024, 3, 1, 1),
         (1, "up4", 1024, (8, 8), 512, 2, 2, 0, T),
         (1, "d4_1", 1024, (16, 16), 512, 3, 1, 1),
         (1, "up3", 512, (16, 16), 256, 2, 2, 0, T),
         (1, "d3_1", 512, (32, 32), 256, 3, 1, 1),
         (1, "up2", 256, (32, 32), 128, 2, 2, 0, T),
         (1, "d2_1", 256, (64, 64), 128, 3, 1, 1),
         (1, "up1", 128, (64, 64), 64, 2, 2, 0, T),
         (1, "d1_1", 128, (128, 128), 64, 3, 1, 1),
         (1, "head1x1", 64, (128, 128), 2, 1)),
    _net("unet3d", 2, "3-D U-Net (Cicek et al.), 1x48x48x48 volume, 32-256 channels",
         (1, "e1_1", 1, (48, 48, 48), 32, 3, 1, 1),
         (1, "e1_2", 32, (48, 48, 48), 64, 3, 1, 1),
         (1, "e2_1", 64, (24, 24, 24), 64, 3, 1, 1),
         (1, "e2_2", 64, (24, 24, 24), 128, 3, 1, 1),
         (1, "e3_1", 128, (12, 12, 12), 128, 3, 1, 1),
         (1, "e3_2", 128, (12, 12, 12), 256, 3, 1, 1),
         (1, "mid_1", 256, (6, 6, 6), 256, 3, 1, 1),
         (1, "mid_2", 256, (6, 6, 6), 512, 3, 1, 1),
         (1, "up3", 512, (6, 6, 6), 512, 2, 2, 0, T),
         (1, "d3_1", 768, (12, 12, 12), 256, 3, 1, 1),
         (1, "d3_2", 256, (12, 12, 12), 256, 3, 1, 1),
         (1, "up2", 256, (12, 12, 12), 256, 2, 2, 0, T),
         (1, "d2_1", 384, (24, 24, 24), 128, 3, 1, 1),
         (1, "d2_2", 128, (24, 24, 24), 128, 3, 1, 1),
         (1, "up1", 128, (24, 24, 24), 128, 2, 2, 0, T),
         (1, "d1_1", 192, (48, 48, 48), 64, 3, 1, 1),
         (1, "d1_2", 64, (48, 48, 48), 64, 3, 1, 1),
         (1, "head1x1", 64, (48, 48, 48), 3, 1)),
    _net("dcgan", 64, "DCGAN 64x64: generator (transposed) and discriminator",
         (1, "g1", 100, (1, 1), 512, 4, 1, 0, T),
         (1, "g2", 512, (4, 4), 256, 4, 2, 1, T),
         (1, "g3", 256, (8, 8), 128, 4, 2, 1, T),
         (1, "g4", 128, (16, 16), 64, 4, 2, 1, T),
         (1, "g5", 64, (32, 32), 3, 4, 2, 1, T),
         (1, "d1", 3, (64, 64), 64, 4, 2, 1),
         (1, "d2", 64, (32, 32), 128, 4, 2, 1),
         (1, "d3", 128, (16, 16), 256, 4, 2, 1),
         (1, "d4", 256, (8, 8), 512, 4, 2, 1),
         (1, "d5", 512, (4, 4), 1, 4)),
    _net("lenet5", 64, "LeNet-5 on 1x32x32 digits",
         (1, "c1", 1, (32, 32), 6, 5),
         (1, "c3", 6, (14, 14), 16, 5),
         (1, "c5", 16, (5, 5), 120, 5)),
    _net("resnet20_cifar", 128, "ResNet-20 on 3x32x32 (1x1 projection shortcuts)",
         (1, "stem", 3, (32, 32), 16, 3, 1, 1),
         (6, "s1_3x3", 16, (32, 32), 16, 3, 1, 1),
         (1, "s2_3x3_s2", 16, (32, 32), 32, 3, 2, 1),
         (1, "s2_shortcut", 16, (32, 32), 32, 1, 2),
         (5, "s2_3x3", 32, (16, 16), 32, 3, 1, 1),
         (1, "s3_3x3_s2", 32, (16, 16), 64, 3, 2, 1),
         (1, "s3_shortcut", 32, (16, 16), 64, 1, 2),
         (5, "s3_3x3", 64, (8, 8), 64, 3, 1, 1)),
    _net("cifar_cnn", 128, "a small CIFAR classifier: 3x32x32, 32-64 channels, 'same' 3x3",
         (1, "c1", 3, (32, 32), 32, 3, 1, 1),
         (1, "c2", 32, (32, 32), 32, 3, 1, 1),
         (1, "c3", 32, (16, 16), 64, 3, 1, 1),
         (1, "c4", 64, (16, 16), 64, 3, 1, 1)),
    _net("wavenet", 4, "WaveNet: 3 stacks of dilations 1-512, 64 residual channels, "
         "8192 samples",
         (1, "causal_in", 1, 8192, 64, 2),
         *[(3, f"dilated_d{d}", 64, 8192, 128, 2, 1, 0, d) for d in (1, 2, 4, 8, 16, 32,
                                                                     64, 128, 256, 512)],
         (30, "residual1x1", 64, 8192, 64, 1),
         (30, "skip1x1", 64, 8192, 256, 1),
         (2, "out1x1", 256, 8192, 256, 1)),
    _net("tcn", 16, "TCN (Bai et al.): kernel 3, dilations 1-8, 128 channels, 1024 steps",
         (1, "in_d1", 32, 1024, 128, 3, 1, 2),
         *[(2 if d > 1 else 1, f"k3_d{d}", 128, 1024, 128, 3, 1, 2 * d, d)
           for d in (1, 2, 4, 8)]),
    _net("melgan", 4, "MelGAN generator: 80 mel bands x 32 frames -> 8192 samples",
         (1, "pre_k7", 80, 32, 512, 7, 1, 3),
         (1, "up8_a", 512, 32, 256, 16, 8, 4, T),
         *[(1, f"res256_d{d}", 256, 256, 256, 3, 1, d, d) for d in (1, 3, 9)],
         (3, "res256_1x1", 256, 256, 256, 1),
         (1, "up8_b", 256, 256, 128, 16, 8, 4, T),
         *[(1, f"res128_d{d}", 128, 2048, 128, 3, 1, d, d) for d in (1, 3, 9)],
         (3, "res128_1x1", 128, 2048, 128, 1),
         (1, "up2_a", 128, 2048, 64, 4, 2, 1, T),
         *[(1, f"res64_d{d}", 64, 4096, 64, 3, 1, d, d) for d in (1, 3, 9)],
         (3, "res64_1x1", 64, 4096, 64, 1),
         (1, "up2_b", 64, 4096, 32, 4, 2, 1, T),
         *[(1, f"res32_d{d}", 32, 8192, 32, 3, 1, d, d) for d in (1, 3, 9)],
         (3, "res32_1x1", 32, 8192, 32, 1),
         (1, "post_k7", 32, 8192, 1, 7, 1, 3)),
    _net("textcnn", 50, "Kim's sentence CNN: 300-d embeddings, 64 tokens, 100 filters each",
         (1, "k3", 300, 64, 100, 3),
         (1, "k4", 300, 64, 100, 4),
         (1, "k5", 300, 64, 100, 5)),
    _net("c3d", 2, "C3D on 3x16x112x112 clips",
         (1, "c1a", 3, (16, 112, 112), 64, 3, 1, 1),
         (1, "c2a", 64, (16, 56, 56), 128, 3, 1, 1),
         (1, "c3a", 128, (8, 28, 28), 256, 3, 1, 1),
         (1, "c3b", 256, (8, 28, 28), 256, 3, 1, 1),
         (1, "c4a", 256, (4, 14, 14), 512, 3, 1, 1),
         (1, "c4b", 512, (4, 14, 14), 512, 3, 1, 1),
         (2, "c5", 512, (2, 7, 7), 512, 3, 1, 1)),
)


# -- the suite: unique layer shapes, network totals, reports -----------------------------

def select(names=None) -> list:
    """The networks named in ``names`` (all of them when empty)."""
    table = {n.name: n for n in NETWORKS}
    if not names:
        return list(NETWORKS)
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ValueError(f"bench: unknown network(s) {', '.join(unknown)}; known: "
                         f"{', '.join(table)}")
    return [table[n] for n in dict.fromkeys(names)]


def suite(networks) -> tuple:
    """``(shapes, uses)``: the distinct layer shapes to time (training-batch layers in all
    three passes, batch-1 layers forward only), and per network a list of
    ``(count, shape name timed, 'train' | 'infer')``."""
    shapes, names, uses = [], {}, {}
    for net in networks:
        entries = []
        for mode, pairs in (("train", net.train_shapes()), ("infer", [
                (c, dataclasses.replace(s, inference=True)) for c, s in net.infer_shapes()])):
            for count, s in pairs:
                k = _key(s)
                if k not in names:
                    names[k] = s.name
                    shapes.append(s)
                entries.append((count, names[k], mode))
        uses[net.name] = entries
    return shapes, uses


def totals(result, networks, uses) -> list:
    """Per network: its training passes summed (every layer x its count, forward + input
    gradient + weight gradient at the training batch) and its batch-1 forward, for
    cyconv and PyTorch (ms), with the ratios; and its worst layer-pass."""
    rows = {(r["shape"], r["direction"]): r for r in result["rows"]}
    out = []
    for net in networks:
        sums = {m: {"cyconv": 0.0, "torch": 0.0, "complete": True} for m in ("train",
                                                                               "infer")}
        worst = (0.0, "")
        for count, name, mode in uses[net.name]:
            for (layer, direction), r in rows.items():
                if layer != name:
                    continue
                for who in ("cyconv", "torch"):
                    t = r["ms"].get(who)
                    if t is None:
                        sums[mode]["complete"] = False
                    else:
                        sums[mode][who] += count * t
                ratio = r["ratio_vs_torch"].get("cyconv")
                if ratio is not None and ratio > worst[0]:
                    worst = (ratio, f"{layer} {direction}")
        entry = {"network": net.name, "batch": net.batch, "note": net.note,
                 "layers": len(net.layers), "convs": sum(c for c, _ in net.layers),
                 "worst_ratio": worst[0] or None, "worst_case": worst[1]}
        for mode, v in sums.items():
            ok = v["complete"] and v["torch"] > 0
            entry[mode] = {"cyconv_ms": v["cyconv"], "torch_ms": v["torch"],
                           "ratio": v["cyconv"] / v["torch"] if ok else None}
        out.append(entry)
    return out


def pass_summary(result, limit=1.2) -> dict:
    """Geomean of the ratios per pass over every distinct layer-pass (a transposed
    convolution's forward counts as forward; batch-1 layers as forward), and the
    layer-passes above ``limit``."""
    from ._bench import _geomean
    by_pass = {"forward": [], "backward_input": [], "backward_weight": []}
    over = []
    for r in result["rows"]:
        ratio = r["ratio_vs_torch"].get("cyconv")
        if ratio is None:
            continue
        p = "forward" if r["direction"] == "transposed" else r["direction"]
        by_pass[p].append(ratio)
        if ratio > limit:
            over.append((ratio, f"{r['shape']} {r['direction']}", r.get("kernel", "?")))
    return {"geomean": {p: _geomean(v) for p, v in by_pass.items()},
            "cases": {p: len(v) for p, v in by_pass.items()},
            "limit": limit, "over_limit": sorted(over, reverse=True)}


def network_table(nets) -> str:
    """The per-network totals as a Markdown table."""
    from ._bench import _fmt, _fmt_ms
    head = ["network", "batch", "convs", "train cyconv ms", "train torch ms", "train ratio",
            "b1 fwd cyconv ms", "b1 fwd torch ms", "b1 ratio", "worst layer-pass"]
    body = []
    for e in nets:
        t, i = e["train"], e["infer"]
        body.append([e["network"], str(e["batch"]), str(e["convs"]),
                     _fmt_ms(t["cyconv_ms"]), _fmt_ms(t["torch_ms"]), _fmt(t["ratio"]),
                     _fmt_ms(i["cyconv_ms"]), _fmt_ms(i["torch_ms"]), _fmt(i["ratio"]),
                     f"{_fmt(e['worst_ratio'])} ({e['worst_case']})"])
    widths = [max(len(c) for c in col) for col in zip(head, *body)]

    def line(cells):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    return "\n".join([line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
                     + [line(b) for b in body])


def summary_text(result, nets, passes) -> str:
    from ._bench import _geomean
    lines = [f"float matmul peak ({result['settings']['dtype']}, "
             f"{result['settings']['threads']} thread(s)): {result['peak_gflops']:.1f} GFLOP/s"]
    for p, g in passes["geomean"].items():
        if g is not None:
            lines.append(f"{p:<15} geomean cyconv/torch {g:.2f} over "
                         f"{passes['cases'][p]} layer-pass(es)")
    for mode, label in (("train", "training passes"), ("infer", "batch-1 forward")):
        vals = [e[mode]["ratio"] for e in nets if e[mode]["ratio"]]
        if vals:
            worst = max(nets, key=lambda e: e[mode]["ratio"] or 0)
            lines.append(f"network totals, {label}: geomean {_geomean(vals):.2f}, worst "
                         f"{worst[mode]['ratio']:.2f} ({worst['network']})")
    over = passes["over_limit"]
    lines.append(f"{len(over)} layer-pass(es) above {passes['limit']}x PyTorch's time"
                 + (": " + "; ".join(f"{n} {r:.2f} [{k}]" for r, n, k in over) if over
                    else ""))
    s = result["summary"]
    if s["mismatches"]:
        lines.append(f"!!! {len(s['mismatches'])} MISMATCH(ES): " + "; ".join(s["mismatches"]))
    return "\n".join(lines)


def plot(nets, path, settings) -> str:
    """Per network, its training-pass and batch-1 ratios as bars (PNG); returns a message."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "plot skipped: matplotlib is not installed (pip install matplotlib)"
    import numpy as np
    from pathlib import Path
    nets = [e for e in nets if e["train"]["ratio"] or e["infer"]["ratio"]]
    if not nets:
        return "plot skipped: no ratios to plot (PyTorch missing?)"
    xs = np.arange(len(nets))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.7 * len(nets) + 2), 4.5))
    for off, mode, label in ((-0.2, "train", "training passes"),
                             (0.2, "infer", "batch-1 forward")):
        vals = [e[mode]["ratio"] or np.nan for e in nets]
        ax.bar(xs + off, vals, 0.4, label=label)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.axhline(0.85, color="gray", linewidth=0.8, linestyle="--", label="0.85")
    ax.set_ylabel("conv time cyconv / PyTorch (lower is better)")
    ax.set_xticks(xs)
    ax.set_xticklabels([f"{e['network']}\n(b{e['batch']})" for e in nets], rotation=45,
                       ha="right", fontsize=8)
    ax.set_title(f"cyconv vs PyTorch per network, {settings['dtype']}, "
                 f"{settings['threads']} thread(s)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return f"plot written to {path}"


def run(networks, **bench_kwargs) -> dict:
    """Time every distinct layer-pass of ``networks`` (:func:`cyconv._bench.run`), then
    add the network totals (``networks``) and the per-pass summary (``passes``)."""
    from . import _bench
    shapes, uses = suite(networks)
    result = _bench.run(shapes, _bench.DIRECTIONS, **bench_kwargs)
    result["networks"] = totals(result, networks, uses)
    result["passes"] = pass_summary(result)
    result["settings"]["networks"] = [n.name for n in networks]
    return result


def write_report(result, path, command) -> tuple:
    """The layer report of :func:`cyconv._bench.write_report`, with the network totals
    and the pass summary first."""
    from pathlib import Path
    from . import _bench
    md, js = _bench.write_report(result, path, command)
    text = Path(md).read_text(encoding="utf-8")
    head, sep, rest = text.partition("## Results")
    extra = ["## Networks", "", network_table(result["networks"]), "",
             "Training: each layer's forward, input-gradient and weight-gradient medians "
             "times its count in the network, summed; b1: the same for the batch-1 forward.",
             "", "```", summary_text(result, result["networks"], result["passes"]), "```",
             "", ""]
    Path(md).write_text(head + "\n".join(extra) + sep + rest, encoding="utf-8")
    return md, js
