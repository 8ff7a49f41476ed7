#!/usr/bin/env python3
"""Reference timings for BENCHMARKS.md: the architectures of `benches/models.rs` in PyTorch on
CPU (forward under `torch.no_grad()`) and explained with Zennit (same composites, BatchNorm
canonizer; for ResNet-50 Zennit's ResNet canonizer), batch 1 and 8,
`torch.set_num_threads(<cores>)`, random weights.

Optional to run; needs `pip install torch zennit` (and `torchvision` for resnet50). From the
repository root:

    python3 benches/reference/bench_pytorch.py [--models mlp,lenet,vgg16,resnet50,vqa] [--threads N] [--batches 1,8] [--device cpu|cuda]

`--device cuda` runs the models, their inputs and Zennit's explanations on the GPU (what
`tools/gpu_check.sh run` compares `examples/gpu_bench.rs` with); every timed call then ends
with `torch.cuda.synchronize()`. The MLP is `specs/mlp.lrp`'s: besides EpsilonPlus it is
explained with that spec's rules as `epsilon_zbox` (z^B on the first layer, epsilon elsewhere).

Prints one line per measurement: `<model>/<composite>/<predict|explain>/<batch> median_ms`.
"""
import argparse
import os
import statistics
import sys
import time

import torch
from torch import nn
from zennit.attribution import Gradient
from zennit.canonizers import SequentialMergeBatchNorm
from zennit.composites import EpsilonGammaBox, EpsilonPlus, SpecialFirstLayerMapComposite, layer_map_base
from zennit.rules import Epsilon, ZBox


def mlp():
    return nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10)), (784,)


def lenet():
    features = nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2))
    classifier = nn.Sequential(nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))
    return nn.Sequential(features, nn.Flatten(), classifier), (1, 28, 28)


def vgg16():
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
    layers, c = [], 3
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU()]
            c = v
    classifier = nn.Sequential(nn.Linear(25088, 4096), nn.ReLU(), nn.Dropout(), nn.Linear(4096, 4096), nn.ReLU(),
                               nn.Dropout(), nn.Linear(4096, 1000))
    return nn.Sequential(nn.Sequential(*layers), nn.Flatten(), classifier), (3, 224, 224)


def resnet50():
    """torchvision's ResNet-50 (its own random initialisation), as `specs/resnet50.lrp`."""
    import torchvision
    return torchvision.models.resnet50(weights=None), (3, 224, 224)


# ImageNet's [0, 1] pixel range after torchvision's normalisation, per channel: the bounds of
# `specs/resnet50.lrp`'s EpsilonGammaBox.
IMAGENET_LOW = (-2.1179, -2.0357, -1.8044)
IMAGENET_HIGH = (2.2489, 2.4286, 2.6400)


def mlp_epsilon_zbox(canonizers):
    """`specs/mlp.lrp`'s rules: z^B (pixels in [0, 1]) on the first dense layer, epsilon 1e-6 on
    the others."""
    return SpecialFirstLayerMapComposite(
        layer_map=layer_map_base() + [(nn.Linear, Epsilon(epsilon=1e-6))],
        first_map=[(nn.Linear, ZBox(low=0.0, high=1.0))],
        canonizers=canonizers)


def vqa_forward_ms(batch, repeats, device="cpu", sync=None):
    """The Relation Network of `tools/train_vqa.py` (as `specs/vqa.lrp`: 28 words, 13 answers),
    random weights, on `batch` 75x75 images with 9-word questions: its forward under no_grad."""
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tools"))
    from train_vqa import RelationNetwork
    model = RelationNetwork(28, 13).eval().to(device)
    images = torch.rand(batch, 3, 75, 75).to(device)
    tokens = torch.randint(1, 28, (batch, 9)).to(device)
    lengths = torch.full((batch,), 9, dtype=torch.int64).to(device)
    with torch.no_grad():
        return median_ms(lambda: model(images, tokens, lengths), repeats, sync=sync)


def median_ms(fn, repeats, warmup=2, sync=None):
    """The median time of `repeats` calls of `fn` after `warmup` calls; `sync` (the GPU's
    `torch.cuda.synchronize`) ends every call, inside the timed region."""
    def call():
        fn()
        if sync is not None:
            sync()
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        call()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="mlp,lenet,vgg16,resnet50")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    a = ap.parse_args()
    if a.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: PyTorch sees no CUDA device")
    device = torch.device(a.device)
    sync = torch.cuda.synchronize if a.device == "cuda" else None
    if a.device == "cuda":
        # To stderr: what the GPU timings were measured with (PyTorch allows TF32 in cuDNN's
        # convolutions by default, not in matrix products).
        print(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}, "
              f"cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}, "
              f"matmul.allow_tf32={torch.backends.cuda.matmul.allow_tf32}", file=sys.stderr, flush=True)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    builders = {"mlp": (mlp, 200), "lenet": (lenet, 200), "vgg16": (vgg16, 5), "resnet50": (resnet50, 10)}
    for name in a.models.split(","):
        if name == "vqa":
            for batch in [int(b) for b in a.batches.split(",")]:
                print(f"vqa/predict/{batch} {vqa_forward_ms(batch, 200, device, sync):.3f}", flush=True)
            continue
        build, repeats = builders[name]
        model, shape = build()
        model.eval()
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.data = 1.0 + torch.rand_like(m.running_var)
        model.to(device)
        for batch in [int(b) for b in a.batches.split(",")]:
            x = torch.rand(batch, *shape).to(device)
            if name == "resnet50":
                # ResNetCanonizer: BatchNorm merged into the convolutions, and each Bottleneck's
                # residual addition made a Sum module (explained by its Norm rule). The bounds
                # are tensors shaped like the input, per channel.
                from zennit.torchvision import ResNetCanonizer
                canonizers = lambda: [ResNetCanonizer()]
                low = torch.tensor(IMAGENET_LOW, device=device).view(1, 3, 1, 1).expand_as(x).contiguous()
                high = torch.tensor(IMAGENET_HIGH, device=device).view(1, 3, 1, 1).expand_as(x).contiguous()
            else:
                canonizers = lambda: [SequentialMergeBatchNorm()]
                low, high = (0.0, 1.0) if name == "lenet" else (-2.1179, 2.64)
            composites = {"epsilon_plus": lambda: EpsilonPlus(canonizers=canonizers())}
            if name != "mlp":
                composites["epsilon_gamma_box"] = lambda: EpsilonGammaBox(low=low, high=high,
                                                                           canonizers=canonizers())
            else:
                composites["epsilon_zbox"] = lambda: mlp_epsilon_zbox(canonizers())
            with torch.no_grad():
                t = median_ms(lambda: model(x), repeats, sync=sync)
            print(f"{name}/predict/{batch} {t:.3f}", flush=True)
            for cname, make in composites.items():
                def explain():
                    with Gradient(model=model, composite=make()) as attributor:
                        out = model(x)
                        target = torch.zeros_like(out)
                        target[torch.arange(batch, device=device), out.argmax(1)] = 1.0
                        attributor(x, target * out)
                t = median_ms(explain, max(3, repeats // 4), sync=sync)
                print(f"{name}/{cname}/explain/{batch} {t:.3f}", flush=True)


if __name__ == "__main__":
    main()
