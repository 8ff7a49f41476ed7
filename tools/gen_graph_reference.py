#!/usr/bin/env python3
"""Zennit reference relevances for three graph-shaped models: a tiny torchvision-style ResNet
(skip connections, Sum canonizer), a Tanh MLP and a text CNN over token embeddings.

Same file format as ../shared/fixtures/zennit/gen_zennit.py. Per model, into the output folder:
  <model>.weights.safetensors  the PyTorch state_dict (names as PyTorch writes them, BatchNorm
                               NOT folded, num_batches_tracked dropped), float32
  <model>.cases.safetensors    input [N, ...] (text_cnn: tokens [N, L] int64), logits [N, C],
                               target [N] int64 (= argmax of the logits), rel.<config> [N, ...]
                               (text_cnn also rel.<config>.tokens [N, L])
  <model>.json                 layers, forward order, per-config rules, the hooks Zennit really
                               attached, conventions

Conventions (also in every JSON):
  * LRP: initial relevance at the output = one_hot(target) * logits, i.e. Zennit's Gradient
    attributor with output gradient one_hot(target) * logits.
  * rel.gradient = x * d f_target / d x: plain autograd, no canonizer, no hooks, output gradient
    one_hot(target) (NOT scaled by the logit); the lrp crate's gradient_x_input convention.
  * computed in float64, stored as float32.

Usage: gen_graph_reference.py [OUTDIR] [--seed N]   (OUTDIR defaults to tests/fixtures, seed to 2:
seed 7, gen_zennit.py's, puts one ResNet sample near an alpha-beta ill-conditioning where float32 and
float64 differ by 2e-4 of max|R|; the script asserts every fixture stays within 2e-5)
Deterministic: running it twice writes byte-identical files.
"""
import argparse
import json
import os

import torch
from torch import nn
from safetensors.torch import save_file
from torchvision.models.resnet import BasicBlock, Bottleneck, conv1x1
import torchvision
import zennit
from zennit.attribution import Gradient
from zennit.canonizers import SequentialMergeBatchNorm
from zennit.composites import (EpsilonGammaBox, EpsilonPlus, EpsilonAlpha2Beta1, LayerMapComposite,
                               layer_map_base)
from zennit.layer import Sum
from zennit.rules import Epsilon, Gamma, AlphaBeta, Pass, Norm, ZPlus, ZBox
from zennit.torchvision import ResNetCanonizer
from zennit.types import Activation, Linear as ZLinear

torch.set_default_dtype(torch.float64)
torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

try:
    from importlib.metadata import version as _pkg_version
    ZENNIT_VERSION = _pkg_version("zennit")
except Exception:  # pragma: no cover
    ZENNIT_VERSION = getattr(zennit, "__version__", "unknown")

VERSIONS = {"torch": torch.__version__, "torchvision": torchvision.__version__, "zennit": ZENNIT_VERSION}

# Rule class Zennit attaches -> rule name used in the configs (as in gen_zennit.py).
HOOK_NAMES = {Epsilon: "epsilon", Gamma: "gamma", AlphaBeta: "alphabeta", ZPlus: "zplus", ZBox: "zbox",
              Pass: "pass", Norm: "norm"}

NORM = {"rule": "norm", "stabilizer": 1e-6}


# ----------------------------------------------------------------------------------------------
# helpers


def randomize_bn(model, g):
    """Non-trivial BatchNorm parameters and statistics (running_var positive), as gen_zennit.py."""
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            c = m.num_features
            m.weight.data = 0.5 + torch.rand(c, generator=g)
            m.bias.data = 0.2 * torch.randn(c, generator=g)
            m.running_mean.data = 0.3 * torch.randn(c, generator=g)
            m.running_var.data = 0.5 + torch.rand(c, generator=g)


def he_init(model, g, skip=()):
    """He-normal weights (fan_in = elements of one output row), 0.1*randn for 1-d parameters."""
    for name, p in model.named_parameters():
        if name in skip:
            continue
        fan_in = p[0].numel() if p.ndim > 1 else 1
        p.data = torch.randn(p.shape, generator=g) * ((2.0 / fan_in) ** 0.5 if p.ndim > 1 else 0.1)


def round_to_f32(model, *tensors):
    """Parameters, buffers and inputs made exactly float32-representable (the fixtures store float32),
    so the float64 reference is the exact answer for the stored numbers."""
    model.float().double()
    return [t.float().double() if t.is_floating_point() else t for t in tensors]


def describe(model):
    layers = []
    for name, m in model.named_modules():
        if name == "" or isinstance(m, nn.Sequential):
            continue
        d = {"name": name, "type": type(m).__name__}
        if isinstance(m, nn.Linear):
            d.update(in_features=m.in_features, out_features=m.out_features, bias=m.bias is not None)
        elif isinstance(m, (nn.Conv1d, nn.Conv2d)):
            d.update(in_channels=m.in_channels, out_channels=m.out_channels, kernel_size=list(m.kernel_size),
                     stride=list(m.stride), padding=list(m.padding), dilation=list(m.dilation), groups=m.groups,
                     bias=m.bias is not None)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            d.update(num_features=m.num_features, eps=m.eps)
        elif isinstance(m, (nn.MaxPool2d, nn.AvgPool2d, nn.MaxPool1d)):
            d.update(kernel_size=m.kernel_size, stride=m.stride, padding=m.padding)
        elif isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d)):
            d.update(output_size=m.output_size)
        elif isinstance(m, nn.Embedding):
            d.update(num_embeddings=m.num_embeddings, embedding_dim=m.embedding_dim)
        elif isinstance(m, nn.ReLU):
            d.update(inplace=m.inplace)
        elif isinstance(m, BasicBlock):
            d.update(stride=m.stride, downsample=m.downsample is not None,
                     forward="out = relu(bn1(conv1(x))); out = bn2(conv2(out)); "
                             "identity = downsample(x) if downsample else x; out = relu(out + identity)")
        elif isinstance(m, Bottleneck):
            d.update(stride=m.stride, downsample=m.downsample is not None, expansion=Bottleneck.expansion,
                     forward="out = relu(bn1(conv1(x))); out = relu(bn2(conv2(out))); out = bn3(conv3(out)); "
                             "identity = downsample(x) if downsample else x; out = relu(out + identity)")
        layers.append(d)
    return layers


def hook_desc(hook):
    name = HOOK_NAMES.get(type(hook), type(hook).__name__)
    return name


def attribute(model, x, target, composite):
    """Zennit relevance of x for one_hot(target) * logits; also returns the logits computed with the
    composite (canonizers applied) and the rule Zennit attached to each module name."""
    assigned = {}
    orig_map = composite.module_map

    def logging_map(ctx, name, module):
        hook = orig_map(ctx, name, module)
        if hook is not None:
            assigned[name] = hook_desc(hook)
        return hook
    composite.module_map = logging_map
    xx = x.clone().requires_grad_(True)
    extra = {}
    with Gradient(model=model, composite=composite) as attributor:
        logits = model(xx).detach()
        extra["modules"] = {n: type(m).__name__ for n, m in model.named_modules()}
        onehot = torch.zeros_like(logits)
        onehot[torch.arange(len(target)), target] = 1.0
        _, rel = attributor(xx, onehot * logits)
    return rel.detach(), logits, assigned, extra


def gradient_x_input(model, x, target):
    """x * d f_target / d x with plain autograd (no canonizer, no hooks, seed one_hot(target))."""
    xx = x.clone().requires_grad_(True)
    logits = model(xx)
    sel = logits[torch.arange(len(target)), target].sum()
    (g,) = torch.autograd.grad(sel, xx)
    return (g * xx).detach()


def check_assigned(model_name, cname, spec, assigned):
    """The conv/dense rules Zennit attached must be the ones the config declares."""
    for lname, s in spec.items():
        got = assigned.get(lname)
        assert got == s["rule"], f"{model_name}/{cname}: {lname} declared {s['rule']}, Zennit attached {got}"


def conservation(rel, logits, target):
    f = logits[torch.arange(len(target)), target]
    return rel.flatten(1).sum(1), f


def fmt(v):
    return ", ".join(f"{c:+.4f}" for c in v.tolist())


CONVENTIONS = {
    "initial_relevance": "one_hot(target) * logits (the pre-softmax score of the target class); "
                         "Zennit's Gradient attributor with output gradient one_hot(target) * logits",
    "target": "argmax of the logits (the predicted class)",
    "gradient_baseline": "rel.gradient = x * d f_target / d x: exact gradient by plain autograd (no canonizer, "
                         "no hooks), output gradient one_hot(target), NOT scaled by the logit",
    "relu": "relevance passes unchanged (Zennit Pass)",
    "tanh": "relevance passes unchanged (Zennit Pass; torch.nn.Tanh is in zennit.types.Activation)",
    "maxpool": "winner-take-all: no hook, Zennit leaves it with its gradient (all relevance of a window to "
               "its maximum input; PyTorch picks the first maximum on ties)",
    "avgpool": "proportional rule (Zennit Norm, stabilizer 1e-6): R_in = x * J^T (R_out / stab(avgpool(x))); "
               "AdaptiveAvgPool2d is a zennit.types.AvgPool and gets it",
    "sum": "residual additions (ResNetCanonizer's Sum over torch.stack([identity, out], -1)) get Zennit Norm, "
           "stabilizer 1e-6: R_identity = identity * R / stab(identity + out), R_out = out * R / stab(identity + out)",
    "stabilizer": "stab(z) = z + eps*sign(z), sign(0)=+1, eps = 1e-6 unless the rule has its own epsilon",
    "batchnorm": "ResNetCanonizer (SequentialMergeBatchNorm) folds each BatchNorm into the conv right before it: "
                 "W'=W*s, b'=(b-mean)*s+beta, s=gamma/sqrt(var+eps); a conv without bias gets b'=-mean*s+beta; "
                 "the BatchNorm then is the identity and gets Pass",
    "rules": {
        "epsilon": "R_j = x_j * sum_k w_jk R_k / stab_eps(z_k), z_k = sum_j x_j w_jk + b_k",
        "gamma": "generalised gamma: for z_k>0: w+gamma*w^+ on x^+ and w+gamma*w^- on x^-, b+gamma*b^+; "
                 "for z_k<0 the mirror; z_k=0 gets none",
        "alphabeta": "alpha * [(x^+ w^+ , x^- w^-, b^+) share] - beta * [(x^+ w^-, x^- w^+, b^-) share]",
        "zplus": "alphabeta with alpha=1, beta=0 (negative inputs allowed: x^- w^- counts as positive contribution)",
        "zbox": "R_j = sum_k (x_j w_jk - l_j w_jk^+ - h_j w_jk^-) R_k / stab(sum_j ...), bias cancels",
        "norm": "R_j = x_j * R_k / stab(z_k) for a parameter-free linear map (sum, average pooling)",
    },
}


def save(out, name, model, cases, meta):
    weights = {k: v.detach().clone().float().contiguous() for k, v in model.state_dict().items()
               if not k.endswith("num_batches_tracked")}
    save_file(weights, os.path.join(out, f"{name}.weights.safetensors"))
    save_file(cases, os.path.join(out, f"{name}.cases.safetensors"))
    meta = dict(meta, versions=VERSIONS,
                precision="parameters and inputs rounded to float32 first, then computed in float64 and stored "
                          f"as float32; the same attribution in float32 stays within {F32_BOUND} of max|R| per "
                          "sample (checked by the script)")
    with open(os.path.join(out, f"{name}.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    for kind in ("weights.safetensors", "cases.safetensors", "json"):
        os.chmod(os.path.join(out, f"{name}.{kind}"), 0o644)   # safetensors writes 0600
    return sorted(weights)


F32_BOUND = 2e-5


def float32_err(model, x, target, make, ref):
    """Conditioning check: the same attribution in float32, worst error relative to max|R| of a sample.
    A large value means the fixture sits near a discontinuity (a max-pool near-tie, a tiny alpha-beta
    denominator) where a correct float32 implementation could miss a 1e-4 tolerance: pick another seed."""
    rel32, _, _, _ = attribute(model.float(), x.float(), target, make())
    model.double()
    err = ((rel32.double() - ref).flatten(1).abs().amax(1) / ref.flatten(1).abs().amax(1)).max().item()
    assert err <= F32_BOUND, f"float32 vs float64 differ by {err:.1e} of max|R|: ill-conditioned, try another seed"
    return err


def min_top2_gap(windows):
    """windows [..., K]: smallest gap between the largest and the second largest value of a window,
    over the windows whose maximum is > 0 (a window whose max is 0 passes no relevance)."""
    top = windows.topk(2, dim=-1).values
    gap = (top[..., 0] - top[..., 1])[top[..., 0] > 0]
    return gap.min().item()


# ----------------------------------------------------------------------------------------------
# 1. resnet


class ExactSequentialMergeBatchNorm(SequentialMergeBatchNorm):
    """Zennit 0.5.1's SequentialMergeBatchNorm, but the merged BatchNorm is an exact identity.

    Zennit 0.5.1 (the PyPI release) sets the merged BatchNorm to mean 0, var 1, weight 1, bias 0 and
    leaves its eps, so it still computes x / sqrt(1 + eps): every folded BatchNorm scales by
    1 - 5e-6 and the canonized ResNet's logits miss the model's by ~3e-5 relative. Upstream Zennit
    later set eps = 0, and (since torch 2.10 rejects eps = 0) var = eps = 0.5 (chr5tphr/zennit#240);
    this does the latter and restores eps on removal. The fold of W and b is Zennit's own."""
    def register(self, linears, batch_norm):
        self.batch_norm_eps = batch_norm.eps
        super().register(linears, batch_norm)
        batch_norm.running_var.data = torch.full_like(batch_norm.running_var.data, 0.5)
        batch_norm.eps = 0.5

    def remove(self):
        super().remove()
        self.batch_norm.eps = self.batch_norm_eps


def exact_resnet_canonizer():
    """zennit.torchvision.ResNetCanonizer() with its SequentialMergeBatchNorm swapped for the exact one
    (the Bottleneck and BasicBlock Sum canonizers are Zennit's own)."""
    can = ResNetCanonizer()
    assert isinstance(can.canonizers[0], SequentialMergeBatchNorm) and len(can.canonizers) == 3
    can.canonizers = (ExactSequentialMergeBatchNorm(),) + tuple(can.canonizers[1:])
    return can


class TinyResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = nn.Sequential(BasicBlock(8, 8))
        self.layer2 = nn.Sequential(BasicBlock(8, 16, stride=2,
                                               downsample=nn.Sequential(conv1x1(8, 16, stride=2), nn.BatchNorm2d(16))))
        self.layer3 = nn.Sequential(Bottleneck(16, 8, stride=2,
                                               downsample=nn.Sequential(conv1x1(16, 32, stride=2), nn.BatchNorm2d(32))))
        self.layer4 = nn.Sequential(Bottleneck(32, 8))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(32, 5)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def gen_resnet(out, seed):
    g = torch.Generator().manual_seed(seed)
    model = TinyResNet().eval()
    he_init(model, g)
    randomize_bn(model, g)
    # N=3, not 6: six 3x32x32 samples make the cases file ~370 KB (five tensors of 72 KB)
    x = torch.randn(3, 3, 32, 32, generator=g).clamp(-3.0, 3.0)
    (x,) = round_to_f32(model, x)
    with torch.no_grad():
        logits = model(x)
    target = logits.argmax(1)

    with torch.no_grad():
        a = model.relu(model.bn1(model.conv1(x)))   # the max-pool's input, [N, 8, 32, 32], >= 0
        u = torch.nn.functional.unfold(torch.nn.functional.pad(a, (1, 1, 1, 1), value=-1.0), 3, stride=2)
        gap = min_top2_gap(u.view(len(x), 8, 9, -1).transpose(2, 3))
    print(f"resnet: max-pool smallest top-2 gap {gap:.1e} (max-pool input up to {a.max().item():.2f})")
    conv = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    lin = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    blocks = [n for n, m in model.named_modules() if isinstance(m, (BasicBlock, Bottleneck))]
    sums = [f"{b}.canonizer_sum" for b in blocks]
    E = lambda e: dict(rule="epsilon", epsilon=e)
    low, high = -3.0, 3.0
    makers = {
        # low/high passed as Python floats exactly like gen_zennit.py; Zennit's ZBox broadcasts
        # them (zennit.core.expand) to the input's shape: every input element has l=-3, h=3.
        "epsilon_gamma_box": lambda can: EpsilonGammaBox(low=low, high=high, canonizers=can),
        "epsilon_plus": lambda can: EpsilonPlus(canonizers=can),
        "epsilon_alpha2_beta1": lambda can: EpsilonAlpha2Beta1(canonizers=can),
    }
    configs = {
        "epsilon_gamma_box": {conv[0]: dict(rule="zbox", low=low, high=high),
                              **{c: dict(rule="gamma", gamma=0.25) for c in conv[1:]}, **{l: E(1e-6) for l in lin}},
        "epsilon_plus": {**{c: dict(rule="zplus") for c in conv}, **{l: E(1e-6) for l in lin}},
        "epsilon_alpha2_beta1": {**{c: dict(rule="alphabeta", alpha=2.0, beta=1.0) for c in conv},
                                 **{l: E(1e-6) for l in lin}},
    }
    cases = {"input": x.float().contiguous(), "logits": logits.float().contiguous(),
             "target": target.to(torch.int64).contiguous()}
    attached = {}
    for cname, make_c in makers.items():
        make = lambda: make_c([exact_resnet_canonizer()])
        rel, logits_c, assigned, extra = attribute(model, x, target, make())
        err = (logits_c - logits).abs().max().item()
        assert err <= 1e-10, f"resnet/{cname}: canonized logits differ from the plain model's by {err:e}"
        mods = extra["modules"]
        for s in sums:
            assert mods.get(s) == "Sum", f"resnet/{cname}: ResNetCanonizer inserted no Sum at {s}"
            assert assigned.get(s) == "norm", f"resnet/{cname}: {s} got {assigned.get(s)}, not Norm"
        assert assigned.get("avgpool") == "norm" and assigned.get("maxpool") is None
        check_assigned("resnet", cname, configs[cname], assigned)
        # the Sum must matter: the same composite without the canonizer gives a different answer
        rel_nc, _, _, _ = attribute(model, x, target, make_c(None))
        diff = ((rel_nc - rel).abs().max() / rel.abs().max()).item()
        assert diff > 1e-3, f"resnet/{cname}: canonizer made no difference ({diff:e})"
        # for information: Zennit 0.5.1's own ResNetCanonizer (merged BatchNorm = x / sqrt(1 + eps))
        rel_z, logits_z, _, _ = attribute(model, x, target, make_c([ResNetCanonizer()]))
        z_logit = ((logits_z - logits).abs().max() / logits.abs().max()).item()
        z_rel = ((rel_z - rel).flatten(1).abs().amax(1) / rel.flatten(1).abs().amax(1)).max().item()
        # after the context the model is restored: no Sum left, BatchNorm unfolded
        assert not any(isinstance(m, Sum) for m in model.modules())
        with torch.no_grad():
            assert torch.equal(model(x), logits)
        cases[f"rel.{cname}"] = rel.float().contiguous()
        attached[cname] = assigned
        s, f = conservation(rel, logits, target)
        print(f"resnet/{cname}: canonized-vs-plain logits max |diff| {err:.1e}; Sum at {len(sums)} blocks "
              f"({', '.join(sums)}) got Norm; avgpool got Norm; maxpool no hook; without canonizer differs by "
              f"{diff:.2f} of max|R|; float32 rel err {float32_err(model, x, target, make, rel):.1e}; "
              f"unpatched ResNetCanonizer: logits off by {z_logit:.1e} of max|logit|, R by {z_rel:.1e} of max|R|")
        print(f"  sum(R) = {fmt(s)}\n  f_c    = {fmt(f)}")
    rel = gradient_x_input(model, x, target)
    cases["rel.gradient"] = rel.float().contiguous()
    s, f = conservation(rel, logits, target)
    print(f"resnet/gradient: sum(x*grad) = {fmt(s)}\n  f_c    = {fmt(f)}")

    meta = {
        "model": "resnet", "input_shape": list(x.shape[1:]), "batch": len(x), "classes": logits.shape[1],
        "input": "randn clipped to [-3, 3]",
        "layers": describe(model),
        "forward": ["conv1", "bn1", "relu", "maxpool", "layer1.0", "layer2.0", "layer3.0", "layer4.0", "avgpool",
                    "flatten(1)", "fc"],
        "blocks": "torchvision.models.resnet.BasicBlock / Bottleneck (see each block's 'forward' in layers); "
                  "a block's self.relu is one module used twice (BasicBlock) or three times (Bottleneck)",
        "shapes": {"conv1": [8, 32, 32], "maxpool": [8, 16, 16], "layer1": [8, 16, 16], "layer2": [16, 8, 8],
                   "layer3": [32, 4, 4], "layer4": [32, 4, 4], "avgpool": [32, 1, 1], "fc": [5]},
        "canonizer": "zennit.torchvision.ResNetCanonizer() for every LRP config: SequentialMergeBatchNorm (conv1+bn1, "
                     "each block's convN+bnN, downsample.0+downsample.1) and, in every block, out + identity "
                     "replaced by canonizer_sum(torch.stack([identity, out], -1)) (zennit.layer.Sum). Its "
                     "SequentialMergeBatchNorm is made exact: Zennit 0.5.1 leaves the merged BatchNorm computing "
                     "x / sqrt(1 + eps) (logits ~3e-5 relative off the model); here the merged BatchNorm gets "
                     "var = eps = 0.5, an exact identity (as upstream chr5tphr/zennit#240), so the canonized logits "
                     "equal the model's to 1e-10 and the fold is exactly W'=W*s, b'=(b-mean)*s+beta",
        "configs": configs,
        "other_rules": {c: {**{s: NORM for s in sums}, "avgpool": NORM, "relu (all)": "pass",
                            "bn (all, identity after folding)": "pass", "maxpool": "gradient (no hook)"}
                        for c in configs},
        "zennit_attached": attached,
        "baselines": {"gradient": CONVENTIONS["gradient_baseline"]},
        "zbox_bounds": "low=-3.0, high=3.0 passed as Python floats (as gen_zennit.py), broadcast by Zennit to "
                       "every input element",
        "conventions": CONVENTIONS,
    }
    return model, cases, meta


# ----------------------------------------------------------------------------------------------
# 2. tanh_mlp


def gen_tanh_mlp(out, seed):
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(10, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 4)).eval()
    for p in model.parameters():
        p.data = torch.randn(p.shape, generator=g) * (1.0 / p.shape[-1] ** 0.5 if p.ndim == 2 else 0.1)
    x = torch.randn(8, 10, generator=g)
    (x,) = round_to_f32(model, x)
    with torch.no_grad():
        logits = model(x)
    target = logits.argmax(1)
    assert issubclass(nn.Tanh, Activation), "zennit.types.Activation lacks Tanh"
    lin = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    tanh = [n for n, m in model.named_modules() if isinstance(m, nn.Tanh)]

    def comp(rule):
        # explicit Tanh -> Pass first (Activation also contains Tanh), then Zennit's base map, then Linear
        return lambda: LayerMapComposite(layer_map=[(nn.Tanh, Pass())] + layer_map_base(1e-6)
                                         + [(nn.Linear, rule)])
    makers = {"epsilon": comp(Epsilon(epsilon=0.01)), "gamma": comp(Gamma(gamma=0.25)),
              "alpha2_beta1": comp(AlphaBeta(alpha=2.0, beta=1.0))}
    configs = {"epsilon": {l: dict(rule="epsilon", epsilon=0.01) for l in lin},
               "gamma": {l: dict(rule="gamma", gamma=0.25) for l in lin},
               "alpha2_beta1": {l: dict(rule="alphabeta", alpha=2.0, beta=1.0) for l in lin}}
    cases = {"input": x.float().contiguous(), "logits": logits.float().contiguous(),
             "target": target.to(torch.int64).contiguous()}
    attached = {}
    for cname, make in makers.items():
        rel, logits_c, assigned, _ = attribute(model, x, target, make())
        assert torch.equal(logits_c, logits)
        check_assigned("tanh_mlp", cname, configs[cname], assigned)
        for t in tanh:
            assert assigned.get(t) == "pass", f"tanh_mlp/{cname}: {t} got {assigned.get(t)}"
        attached[cname] = assigned
        cases[f"rel.{cname}"] = rel.float().contiguous()
        s, f = conservation(rel, logits, target)
        print(f"tanh_mlp/{cname}: Tanh {tanh} got Pass; float32 rel err "
              f"{float32_err(model, x, target, make, rel):.1e}\n  sum(R) = {fmt(s)}\n  f_c    = {fmt(f)}")
    rel = gradient_x_input(model, x, target)
    cases["rel.gradient"] = rel.float().contiguous()
    s, f = conservation(rel, logits, target)
    print(f"tanh_mlp/gradient: sum(x*grad) = {fmt(s)}\n  f_c    = {fmt(f)}")
    meta = {
        "model": "tanh_mlp", "input_shape": list(x.shape[1:]), "batch": len(x), "classes": logits.shape[1],
        "input": "randn",
        "layers": describe(model), "forward": "sequential: 0, 1 (Tanh), 2, 3 (Tanh), 4",
        "canonizer": None,
        "configs": configs,
        "other_rules": {c: {t: "pass" for t in tanh} for c in configs},
        "composite": "LayerMapComposite([(torch.nn.Tanh, Pass())] + layer_map_base(1e-6) + [(torch.nn.Linear, rule)]); "
                     "torch.nn.Tanh is already in zennit.types.Activation (-> Pass), the explicit entry only makes it "
                     "obvious",
        "zennit_attached": attached,
        "baselines": {"gradient": CONVENTIONS["gradient_baseline"]},
        "conventions": CONVENTIONS,
    }
    return model, cases, meta


# ----------------------------------------------------------------------------------------------
# 3. text_cnn


class TextCnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(20, 6)
        self.conv = nn.Conv1d(6, 8, kernel_size=3)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveMaxPool1d(1)
        self.fc = nn.Linear(8, 3)

    def forward_embedded(self, e):
        x = e.transpose(1, 2)
        x = self.pool(self.relu(self.conv(x)))
        return self.fc(torch.flatten(x, 1))

    def forward(self, tokens):
        return self.forward_embedded(self.embedding(tokens))


class TextCnnHead(nn.Module):
    """The part of TextCnn after the embedding, sharing its modules under the same names."""
    def __init__(self, m):
        super().__init__()
        self.conv, self.relu, self.pool, self.fc = m.conv, m.relu, m.pool, m.fc

    forward = TextCnn.forward_embedded


def gen_text_cnn(out, seed):
    g = torch.Generator().manual_seed(seed)
    model = TextCnn().eval()
    he_init(model, g, skip=("embedding.weight",))
    model.embedding.weight.data = torch.randn(20, 6, generator=g)
    tokens = torch.randint(0, 20, (8, 12), generator=g)
    round_to_f32(model)
    with torch.no_grad():
        e = model.embedding(tokens)
        logits = model(tokens)
    target = logits.argmax(1)
    head = TextCnnHead(model).eval()
    with torch.no_grad():
        a = model.relu(model.conv(e.transpose(1, 2)))   # the global max-pool's input [N, 8, 10]
    print(f"text_cnn: global max-pool smallest top-2 gap {min_top2_gap(a):.1e} (pool input up to {a.max().item():.2f})")
    with torch.no_grad():
        assert torch.equal(head(e), logits)
    makers = {"epsilon_plus": lambda: EpsilonPlus(),
              "epsilon": lambda: LayerMapComposite(layer_map=layer_map_base(1e-6) + [(ZLinear, Epsilon(epsilon=1e-6))])}
    configs = {"epsilon_plus": {"conv": dict(rule="zplus"), "fc": dict(rule="epsilon", epsilon=1e-6)},
               "epsilon": {"conv": dict(rule="epsilon", epsilon=1e-6), "fc": dict(rule="epsilon", epsilon=1e-6)}}
    cases = {"tokens": tokens.to(torch.int64).contiguous(), "logits": logits.float().contiguous(),
             "target": target.to(torch.int64).contiguous()}
    attached = {}
    for cname, make in makers.items():
        rel, logits_c, assigned, _ = attribute(head, e, target, make())
        assert torch.equal(logits_c, logits)
        assert rel.shape == e.shape == (8, 12, 6)
        check_assigned("text_cnn", cname, configs[cname], assigned)
        assert assigned.get("relu") == "pass" and assigned.get("pool") is None
        attached[cname] = assigned
        cases[f"rel.{cname}"] = rel.float().contiguous()
        cases[f"rel.{cname}.tokens"] = rel.sum(2).float().contiguous()
        s, f = conservation(rel, logits, target)
        print(f"text_cnn/{cname}: relu Pass, pool no hook; float32 rel err "
              f"{float32_err(head, e, target, make, rel):.1e}\n  sum(R) = {fmt(s)}\n  f_c    = {fmt(f)}")
    rel = gradient_x_input(head, e, target)
    cases["rel.gradient"] = rel.float().contiguous()
    cases["rel.gradient.tokens"] = rel.sum(2).float().contiguous()
    s, f = conservation(rel, logits, target)
    print(f"text_cnn/gradient: sum(e*grad) = {fmt(s)}\n  f_c    = {fmt(f)}")
    meta = {
        "model": "text_cnn", "vocab": 20, "embedding_dim": 6, "length": 12, "batch": len(tokens),
        "classes": logits.shape[1], "input": "tokens [N, L] int64, uniform in [0, vocab)",
        "layers": describe(model),
        "forward": ["embedding (tokens [N, L] -> e [N, L, 6])", "transpose(1, 2) -> [N, 6, L]",
                    "conv -> [N, 8, 10]", "relu", "pool (global max over time) -> [N, 8, 1]", "flatten(1) -> [N, 8]",
                    "fc -> [N, 3]"],
        "relevance_wrt": "the embedded sequence e = embedding(tokens), [N, L, 6] token-major (position, then "
                         "embedding dim); Zennit runs on the model after the embedding (transpose included); "
                         "rel.<config>.tokens [N, L] = sum over the embedding dim",
        "canonizer": None,
        "configs": configs,
        "other_rules": {c: {"relu": "pass", "pool": "gradient (no hook; winner-take-all)"} for c in configs},
        "composites": {"epsilon_plus": "EpsilonPlus() (Conv1d is a zennit.types.Convolution -> ZPlus; Linear -> "
                                       "Epsilon(1e-6))",
                       "epsilon": "LayerMapComposite(layer_map_base(1e-6) + [(zennit.types.Linear, Epsilon(1e-6))])"},
        "zennit_attached": attached,
        "baselines": {"gradient": CONVENTIONS["gradient_baseline"] + " (x = the embedded sequence e)"},
        "conventions": CONVENTIONS,
    }
    return model, cases, meta


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("out", nargs="?", default=os.path.join(here, "..", "tests", "fixtures"))
    ap.add_argument("--seed", type=int, default=2)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    print("versions:", VERSIONS)
    for name, gen in [("resnet", gen_resnet), ("tanh_mlp", gen_tanh_mlp), ("text_cnn", gen_text_cnn)]:
        model, cases, meta = gen(a.out, a.seed)
        meta = dict(meta, seed=a.seed, generator="tools/gen_graph_reference.py")
        keys = save(a.out, name, model, cases, meta)
        print(f"{name}: weights {keys}")
        print(f"{name}: cases " + ", ".join(f"{k} {list(v.shape)} {str(v.dtype)[6:]}" for k, v in cases.items()))


if __name__ == "__main__":
    main()
