#!/usr/bin/env python3
"""Reference relevances for a small Relation-Network VQA model (`VqaSmall`): an image through two
convolutions to a [6, 4, 4] map, its 16 cells as objects with coordinates, a question of any length
through an Embedding and an LSTM to a vector q, every ordered pair of objects with q appended through
a row-wise MLP `g`, the sum over the pairs, and an MLP `f` to 4 logits. The spec (tests/vqa_fixtures.rs):

    VqaSmall(inputs(image = [3, 20, 20], question = tokens), composite = Alpha1Beta0) {
        conv: image -> {
            Conv2d(3, 6, kernel_size = 3, stride = 2), ReLU, BatchNorm2d(6),
            Conv2d(6, 6, kernel_size = 3, stride = 2), ReLU, BatchNorm2d(6),
        },
        objects: Objects,
        embedding: question -> Embedding(12, 5),
        lstm: LSTM(5, 7, rule = LrpAll(epsilon = 0.001)),
        pairs: Pairs(objects, lstm),
        g: { Linear(23, 10), ReLU, Linear(10, 10), ReLU },
        total: SetSum,
        f: { Linear(10, 10), ReLU, Linear(10, 4) },
    }

LRP, in float64:
  * image/coordinates/question-vector part: Zennit 0.5.1, AlphaBeta(alpha=1, beta=0) on every Conv2d and
    Linear, Pass on every ReLU, Norm (stabiliser 1e-6) on the set's sum (zennit.layer.Sum over the last
    dimension, the 256 rows permuted there); the BatchNorms folded FORWARD beforehand, explicitly here
    (conv.2 into conv.3's input channels; conv.5, the last, into g.0's columns of the two objects of a
    pair), as the lrp compiler does; the coordinates are a leaf tensor of their own, so their relevance is
    reported; q's relevance is the sum over its 256 copies;
  * question vector -> embeddings: the LSTM-LRP reference algorithm (Arras et al., LRP-all for the
    products, epsilon 0.001 for the linear maps, the bias in the denominator but its share dropped), in
    numpy, written out here (the conventions of ../shared/fixtures/lstm/gen_lstm.py).
Initial relevance one_hot(target) * logits, target = argmax. Gradient x input: plain autograd on the
unfolded model, output gradient one_hot(target); gxi_coords = (cx, cy) * d f_c / d (cx, cy).
Before writing, the script asserts: forward against an independent numpy forward; the hooks Zennit
attached; Zennit's head relevance against a numpy z+/Norm implementation; gradient x input against
central differences; conservation with biases zero; float32 conditioning (tests/fixtures/vqa/README.md).

Writes into OUTDIR (default tests/fixtures/vqa):
  vqa_small.weights.safetensors  the UNFOLDED state_dict, float32 (no num_batches_tracked)
  vqa_small.cases.safetensors    image [N,3,20,20], tokens.<n> [T_n] int64, logits [N,4], target [N] int64,
                                 lrp_image [N,3,20,20], lrp_coords [N,16,2], lrp_question.<n> [T_n,5],
                                 gxi_image [N,3,20,20], gxi_coords [N,16,2], gxi_question.<n> [T_n,5]

Usage: nice -n 19 /work/pyref/bin/python tools/gen_vqa_reference.py [OUTDIR] [--seed N]
Deterministic: running it twice writes byte-identical files.
"""
import argparse
import copy
import os

import numpy as np
import torch
from torch import nn
from safetensors.torch import save_file
import zennit
from zennit.composites import LayerMapComposite, layer_map_base
from zennit.layer import Sum
from zennit.rules import AlphaBeta, Norm, Pass
from zennit.types import Linear as ZLinear

torch.set_default_dtype(torch.float64)
torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

try:
    from importlib.metadata import version as _pkg_version
    ZENNIT_VERSION = _pkg_version("zennit")
except Exception:  # pragma: no cover
    ZENNIT_VERSION = getattr(zennit, "__version__", "unknown")
VERSIONS = {"torch": torch.__version__, "zennit": ZENNIT_VERSION, "numpy": np.__version__}

BN_EPS = 1e-5
LSTM_EPS = 1e-3      # LrpAll(epsilon = 0.001)
SUM_EPS = 1e-6       # Zennit's Norm stabiliser at the set sum
ZPLUS_EPS = 1e-6     # Zennit's AlphaBeta stabiliser
LENGTHS = [3, 6, 1, 9]
VOCAB, EMB, HID, CLASSES = 12, 5, 7, 4
F32_BOUND = 2e-5


# ----------------------------------------------------------------------------------------------
# the model (unfolded, as PyTorch would hold it)


class VqaSmall(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(3, 6, kernel_size=3, stride=2), nn.ReLU(), nn.BatchNorm2d(6, eps=BN_EPS),
            nn.Conv2d(6, 6, kernel_size=3, stride=2), nn.ReLU(), nn.BatchNorm2d(6, eps=BN_EPS))
        self.embedding = nn.Embedding(VOCAB, EMB)
        self.lstm = nn.LSTM(EMB, HID, batch_first=True)
        self.g = nn.Sequential(nn.Linear(23, 10), nn.ReLU(), nn.Linear(10, 10), nn.ReLU())
        self.f = nn.Sequential(nn.Linear(10, 10), nn.ReLU(), nn.Linear(10, CLASSES))

    def question_vector(self, emb):
        """emb [T, 5] -> h_T [7]."""
        _, (h, _) = self.lstm(emb[None])
        return h[0, 0]

    def forward_embedded(self, image, embs):
        """image [B,3,20,20], embs: B tensors [T_n, 5] -> logits [B, 4]."""
        m = self.conv(image)
        q = torch.stack([self.question_vector(e) for e in embs])
        return pairs_head(m, coordinates(m.shape[0], dtype=m.dtype), q, self.g, lambda h: h.sum(1), self.f)


def coordinates(batch, h=4, w=4, dtype=None):
    """[B, H*W, 2]: object k = y*W + x has (cx, cy) = (-1 + 2x/(W-1), -1 + 2y/(H-1))."""
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    c = torch.stack([-1 + 2 * xs.flatten() / (w - 1), -1 + 2 * ys.flatten() / (h - 1)], 1)
    c = c.to(dtype or torch.get_default_dtype())
    return c[None].repeat(batch, 1, 1)


def pairs_head(m, coords, q, g, set_sum, f):
    """m [B,C,H,W] -> objects [B,HW,C+2] -> rows [B,(HW)^2, 2(C+2)+7] (p = i*N + j: [o_i, o_j, q]) -> g
    row-wise -> set_sum over the rows -> f."""
    b, c, h, w = m.shape
    n = h * w
    objects = torch.cat([m.flatten(2).transpose(1, 2), coords], 2)
    ii, jj = torch.arange(n).repeat_interleave(n), torch.arange(n).repeat(n)
    rows = torch.cat([objects[:, ii], objects[:, jj], q[:, None, :].expand(b, n * n, q.shape[1])], 2)
    return f(set_sum(g(rows)))


def bn_affine(bn):
    """y = s x + t of an eval-mode BatchNorm."""
    s = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    return s, bn.bias.detach() - bn.running_mean * s


class FoldedHead(nn.Module):
    """The model from (image, coordinates, q) to the logits, BatchNorms folded forward as the compiler
    does; module names follow the spec's (the folded BatchNorms become Identity)."""
    def __init__(self, model):
        super().__init__()
        conv0, bn2, conv3, bn5 = model.conv[0], model.conv[2], model.conv[3], model.conv[5]
        g0 = model.g[0]
        s2, t2 = bn_affine(bn2)
        c3 = nn.Conv2d(6, 6, kernel_size=3, stride=2)
        assert conv3.padding == (0, 0)
        c3.weight.data = conv3.weight.detach() * s2[None, :, None, None]
        c3.bias.data = conv3.bias.detach() + (conv3.weight.detach() * t2[None, :, None, None]).sum((1, 2, 3))
        s5, t5 = bn_affine(bn5)
        l0 = nn.Linear(23, 10)
        w, b = g0.weight.detach().clone(), g0.bias.detach().clone()
        for off in (0, 8):                       # the features of the first and of the second object
            b = b + w[:, off:off + 6] @ t5
            w[:, off:off + 6] = w[:, off:off + 6] * s5[None]
        l0.weight.data, l0.bias.data = w, b
        self.conv = nn.Sequential(copy_module(conv0), nn.ReLU(), nn.Identity(), c3, nn.ReLU(), nn.Identity())
        self.g = nn.Sequential(l0, nn.ReLU(), copy_module(model.g[2]), nn.ReLU())
        self.total = Sum()                        # zennit.layer.Sum: sums over the last dimension
        self.f = nn.Sequential(copy_module(model.f[0]), nn.ReLU(), copy_module(model.f[2]))

    def forward(self, image, coords, q):
        return pairs_head(self.conv(image), coords, q, self.g, lambda h: self.total(h.transpose(1, 2)), self.f)


def copy_module(m):
    return copy.deepcopy(m)


# ----------------------------------------------------------------------------------------------
# LSTM-LRP reference algorithm (numpy)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def lstm_forward(sd, x):
    """x [T, e] -> dict of the states; PyTorch gate order i, f, g, o; h_0 = c_0 = 0 (index -1 = T)."""
    wih, whh = sd["lstm.weight_ih_l0"], sd["lstm.weight_hh_l0"]
    b = sd["lstm.bias_ih_l0"] + sd["lstm.bias_hh_l0"]
    d, T = whh.shape[1], len(x)
    h, c = np.zeros((T + 1, d), x.dtype), np.zeros((T + 1, d), x.dtype)   # row T (= -1) stays 0
    gates, pre = np.zeros((T, 4 * d), x.dtype), np.zeros((T, 4 * d), x.dtype)
    for t in range(T):
        pre[t] = wih @ x[t] + whh @ h[t - 1] + b
        gates[t, :2 * d] = sigmoid(pre[t, :2 * d])
        gates[t, 2 * d:3 * d] = np.tanh(pre[t, 2 * d:3 * d])
        gates[t, 3 * d:] = sigmoid(pre[t, 3 * d:])
        i, f, g, o = np.split(gates[t], 4)
        c[t] = f * c[t - 1] + i * g
        h[t] = o * np.tanh(c[t])
    return {"x": x, "h": h, "c": c, "gates": gates, "pre": pre, "d": d, "T": T}


def lrp_linear(hin, w, hout, rout, eps):
    """Epsilon rule, bias share dropped (bias_factor 0): R_j = hin_j sum_k w_kj R_k / stab(hout_k),
    w [out, in], stab(z) = z + eps sign(z), sign(0) = +1 (LRP_for_LSTM's lrp_linear)."""
    denom = hout + eps * np.where(hout >= 0, 1.0, -1.0).astype(hout.dtype)
    return hin * (w.T @ (rout / denom))


def lstm_lrp(sd, st, r_h, eps):
    """Relevance of the inputs x_t [T, e] from the relevance r_h of h_T (LRP-all, as LSTM_bidi.lrp)."""
    d, T, dt = st["d"], st["T"], st["x"].dtype
    wg_x, wg_h = sd["lstm.weight_ih_l0"][2 * d:3 * d], sd["lstm.weight_hh_l0"][2 * d:3 * d]
    eye = np.eye(d, dtype=dt)
    rx = np.zeros_like(st["x"])
    rh, rc = np.zeros((T + 1, d), dt), np.zeros((T + 1, d), dt)
    rh[T - 1] = r_h
    for t in reversed(range(T)):
        i, f, g, _ = np.split(st["gates"][t], 4)
        rc[t] += rh[t]                                                           # h = o tanh(c): all to c
        rc[t - 1] = lrp_linear(f * st["c"][t - 1], eye, st["c"][t], rc[t], eps)  # c = f c_prev + i g
        rg = lrp_linear(i * g, eye, st["c"][t], rc[t], eps)
        zg = st["pre"][t, 2 * d:3 * d]                                           # bias included
        rx[t] = lrp_linear(st["x"][t], wg_x, zg, rg, eps)
        rh[t - 1] = lrp_linear(st["h"][t - 1], wg_h, zg, rg, eps)
    return rx


# ----------------------------------------------------------------------------------------------
# independent numpy forward and head LRP (checks of the PyTorch model and of the Zennit hooks)


def np_conv(x, w, b, stride):
    """x [C,H,W], w [O,C,k,k] (no padding) -> [O,H',W'] by explicit windows."""
    o, c, k, _ = w.shape
    ho, wo = (x.shape[1] - k) // stride + 1, (x.shape[2] - k) // stride + 1
    out = np.zeros((o, ho, wo))
    for y in range(ho):
        for xx in range(wo):
            win = x[:, y * stride:y * stride + k, xx * stride:xx * stride + k]
            out[:, y, xx] = (w * win[None]).sum((1, 2, 3)) + b
    return out


def np_objects(m):
    c, h, w = m.shape
    return np.array([list(m[:, y, x]) + [-1 + 2 * x / (w - 1), -1 + 2 * y / (h - 1)]
                     for y in range(h) for x in range(w)])


def np_forward(sd, image, emb):
    """The unfolded model, explicit BatchNorms, numpy float64, one sample."""
    def bn(x, p):
        s = sd[p + ".weight"] / np.sqrt(sd[p + ".running_var"] + BN_EPS)
        return s[:, None, None] * (x - sd[p + ".running_mean"][:, None, None]) + sd[p + ".bias"][:, None, None]
    relu = lambda v: np.maximum(v, 0)
    m = bn(relu(np_conv(image, sd["conv.0.weight"], sd["conv.0.bias"], 2)), "conv.2")
    m = bn(relu(np_conv(m, sd["conv.3.weight"], sd["conv.3.bias"], 2)), "conv.5")
    objs = np_objects(m)
    q = lstm_forward(sd, emb)["h"][len(emb) - 1]
    total = np.zeros(10)
    for i in range(len(objs)):
        for j in range(len(objs)):
            row = np.concatenate([objs[i], objs[j], q])
            a = relu(sd["g.0.weight"] @ row + sd["g.0.bias"])
            total += relu(sd["g.2.weight"] @ a + sd["g.2.bias"])
    a = relu(sd["f.0.weight"] @ total + sd["f.0.bias"])
    return sd["f.2.weight"] @ a + sd["f.2.bias"]


def zplus_dense(x, w, b, r):
    """Zennit AlphaBeta(1, 0) on x @ w.T + b: z+ = x+ W+ + x- W- + b+, R_j = sum_k (x+_j W+_kj + x-_j W-_kj) R_k
    / stab(z+_k), x [..., in]."""
    wp, wn = np.clip(w, 0, None), np.clip(w, None, 0)
    xp, xn = np.clip(x, 0, None), np.clip(x, None, 0)
    z = xp @ wp.T + xn @ wn.T + np.clip(b, 0, None)
    s = r / (z + ZPLUS_EPS * np.where(z >= 0, 1.0, -1.0))
    return xp * (s @ wp) + xn * (s @ wn)


def im2col(x, k, stride):
    c, h, w = x.shape
    ho, wo = (h - k) // stride + 1, (w - k) // stride + 1
    cols = np.zeros((ho * wo, c * k * k))
    for y in range(ho):
        for xx in range(wo):
            cols[y * wo + xx] = x[:, y * stride:y * stride + k, xx * stride:xx * stride + k].ravel()
    return cols, ho, wo


def col2im(cols, shape, k, stride, wo):
    out = np.zeros(shape)
    for p, row in enumerate(cols):
        y, xx = divmod(p, wo)
        out[:, y * stride:y * stride + k, xx * stride:xx * stride + k] += row.reshape(shape[0], k, k)
    return out


def np_head_lrp(head, image, q, target):
    """LRP of the folded head in numpy (z+ on conv and dense via im2col, Norm at the sum), one sample:
    (R_image, R_coords, R_q); independent of Zennit's hooks."""
    P = {k: v.detach().numpy() for k, v in head.state_dict().items()}
    relu = lambda v: np.maximum(v, 0)
    x0 = image
    c0, _, wo0 = im2col(x0, 3, 2)
    a1 = relu(c0 @ P["conv.0.weight"].reshape(6, -1).T + P["conv.0.bias"])     # [81, 6]
    x1 = a1.T.reshape(6, 9, 9)
    c1, _, wo1 = im2col(x1, 3, 2)
    a2 = relu(c1 @ P["conv.3.weight"].reshape(6, -1).T + P["conv.3.bias"])     # [16, 6]
    m = a2.T.reshape(6, 4, 4)
    objs = np_objects(m)
    n = len(objs)
    rows = np.array([np.concatenate([objs[i], objs[j], q]) for i in range(n) for j in range(n)])
    h1 = relu(rows @ P["g.0.weight"].T + P["g.0.bias"])
    h2 = relu(h1 @ P["g.2.weight"].T + P["g.2.bias"])
    total = h2.sum(0)
    f1 = relu(total @ P["f.0.weight"].T + P["f.0.bias"])
    logits = f1 @ P["f.2.weight"].T + P["f.2.bias"]
    r = np.zeros(CLASSES)
    r[target] = logits[target]
    r = zplus_dense(f1, P["f.2.weight"], P["f.2.bias"], r)
    r_total = zplus_dense(total, P["f.0.weight"], P["f.0.bias"], r)
    r_h2 = h2 * (r_total / (total + SUM_EPS * np.where(total >= 0, 1.0, -1.0)))[None]   # Norm
    r_h1 = zplus_dense(h1, P["g.2.weight"], P["g.2.bias"], r_h2)
    r_rows = zplus_dense(rows, P["g.0.weight"], P["g.0.bias"], r_h1)
    r_objs = np.zeros_like(objs)
    for p in range(n * n):
        r_objs[p // n] += r_rows[p, :8]
        r_objs[p % n] += r_rows[p, 8:16]
    r_q = r_rows[:, 16:].sum(0)
    r_m = r_objs[:, :6].T.reshape(6, 4, 4)
    r_c1 = zplus_dense(c1, P["conv.3.weight"].reshape(6, -1), P["conv.3.bias"], r_m.reshape(6, -1).T)
    r_x1 = col2im(r_c1, x1.shape, 3, 2, wo1)
    r_c0 = zplus_dense(c0, P["conv.0.weight"].reshape(6, -1), P["conv.0.bias"], r_x1.reshape(6, -1).T)
    r_x0 = col2im(r_c0, x0.shape, 3, 2, wo0)
    return r_x0, r_objs[:, 6:], r_q, logits


# ----------------------------------------------------------------------------------------------
# the reference


def composite():
    return LayerMapComposite(layer_map=layer_map_base(SUM_EPS) + [(ZLinear, AlphaBeta(alpha=1.0, beta=0.0))])


HOOK_NAMES = {AlphaBeta: "alphabeta", Norm: "norm", Pass: "pass"}


def head_lrp(head, image, coords, q, target):
    """Zennit: relevance of (image, coords, q) for one_hot(target) * logits; the rules attached."""
    comp = composite()
    assigned, orig = {}, comp.module_map

    def logging_map(ctx, name, module):
        hook = orig(ctx, name, module)
        if hook is not None:
            assigned[name] = HOOK_NAMES.get(type(hook), type(hook).__name__)
        return hook
    comp.module_map = logging_map
    leaves = [t.detach().clone().requires_grad_(True) for t in (image, coords, q)]
    with comp.context(head) as modified:
        logits = modified(*leaves)
        onehot = torch.zeros_like(logits)
        onehot[torch.arange(len(target)), target] = 1.0
        rels = torch.autograd.grad(logits, leaves, grad_outputs=onehot * logits.detach())
    return [r.detach() for r in rels], logits.detach(), assigned


def reference(model, image, tokens, dtype=torch.float64):
    """Everything, computed in `dtype`: logits, target, LRP and gradient x input."""
    model = model.to(dtype)
    image = image.to(dtype)
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    embs = [model.embedding(t).detach() for t in tokens]
    with torch.no_grad():
        logits = model.forward_embedded(image, embs)
        qs = torch.stack([model.question_vector(e) for e in embs])
    target = logits.argmax(1)
    head = FoldedHead(model).to(dtype).eval()
    coords = coordinates(len(image), dtype=dtype)
    (r_image, r_coords, r_q), logits_h, assigned = head_lrp(head, image, coords, qs, target)
    r_question = [lstm_lrp(sd, lstm_forward(sd, e.numpy()), r_q[n].numpy(), LSTM_EPS) for n, e in enumerate(embs)]
    # gradient x input: plain autograd on the unfolded model
    xi = image.clone().requires_grad_(True)
    xe = [e.clone().requires_grad_(True) for e in embs]
    m = model.conv(xi)
    xc = coordinates(len(image), dtype=dtype).requires_grad_(True)
    q = torch.stack([model.question_vector(e) for e in xe])
    out = pairs_head(m, xc, q, model.g, lambda h: h.sum(1), model.f)
    grads = torch.autograd.grad(out[torch.arange(len(target)), target].sum(), [xi, xc] + xe)
    res = {"logits": logits, "logits_folded": logits_h, "target": target, "qs": qs, "embs": embs,
           "lrp_image": r_image, "lrp_coords": r_coords, "lrp_q": r_q, "lrp_question": r_question,
           "gxi_image": (grads[0] * xi).detach(), "gxi_coords": (grads[1] * xc).detach(),
           "gxi_question": [(g * e).detach() for g, e in zip(grads[2:], xe)], "assigned": assigned, "head": head}
    model.double()
    return res


def make_model(seed, zero_bias=False):
    g = torch.Generator().manual_seed(seed)
    model = VqaSmall().eval()
    for name, p in model.named_parameters():
        if name == "embedding.weight":
            p.data = torch.randn(p.shape, generator=g)
        elif name.startswith("lstm."):
            p.data = torch.randn(p.shape, generator=g) * (0.6 if p.ndim > 1 else 0.3)
        elif p.ndim > 1:
            fan_in = p[0].numel()
            p.data = torch.randn(p.shape, generator=g) * (2.0 / fan_in) ** 0.5
        else:
            p.data = 0.1 * torch.randn(p.shape, generator=g)
    for bn in (model.conv[2], model.conv[5]):
        c = bn.num_features
        bn.weight.data = 0.5 + torch.rand(c, generator=g)
        bn.bias.data = 0.2 * torch.randn(c, generator=g)
        bn.running_mean.data = 0.3 * torch.randn(c, generator=g)
        bn.running_var.data = 0.5 + torch.rand(c, generator=g)
    # the set sum adds 256 rows: keep the logits moderate; the question columns of g.0 scaled up so
    # that the question changes the answer (with seed 22 the targets are 3, 3, 2, 3)
    model.f[0].weight.data /= 16.0
    model.g[0].weight.data[:, 16:] *= 5.0
    image = torch.randn(len(LENGTHS), 3, 20, 20, generator=g)
    tokens = [torch.randint(0, VOCAB, (T,), generator=g) for T in LENGTHS]
    if zero_bias:
        for name, p in model.named_parameters():
            if name.endswith("bias") or "bias_" in name:
                p.data.zero_()
        for bn in (model.conv[2], model.conv[5]):
            bn.running_mean.data.zero_()      # t = beta - mean s = 0: the folds add no bias
    model.float().double()                    # exactly float32-representable
    return model, image.float().double(), tokens


def rel_err(a, b):
    """Worst |a - b| / max|b| over the samples (a, b [N, ...])."""
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return (np.abs(a - b).max(1) / np.abs(b).max(1)).max()


def f32_errors(r32, res):
    """Per quantity, the worst over the samples of max|float32 - float64| / max|float64| of the sample
    (what the Rust test compares, each quantity on its own scale)."""
    out = {}
    for key in ("lrp_image", "lrp_coords", "gxi_image", "gxi_coords"):
        out[key] = rel_err(r32[key].double().numpy(), res[key].numpy())
    for key in ("lrp_question", "gxi_question"):
        out[key] = max(rel_err(np.asarray(a, np.float64)[None], np.asarray(b)[None])
                       for a, b in zip(r32[key], res[key]))
    return out


def check(model, image, tokens, res):
    """Validate the reference (asserts); prints what it checked."""
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    N = len(LENGTHS)
    # 1. forward: PyTorch unfolded == PyTorch folded == numpy with explicit BatchNorms, loops over pairs
    npl = np.stack([np_forward(sd, image[n].numpy(), res["embs"][n].numpy()) for n in range(N)])
    e1 = np.abs(npl - res["logits"].numpy()).max() / np.abs(npl).max()
    e2 = (res["logits_folded"] - res["logits"]).abs().max().item() / res["logits"].abs().max().item()
    assert e1 < 1e-12 and e2 < 1e-12, (e1, e2)
    for n in range(N):
        h = lstm_forward(sd, res["embs"][n].numpy())["h"][LENGTHS[n] - 1]
        assert np.abs(h - res["qs"][n].numpy()).max() < 1e-13
    print(f"forward: numpy (explicit BatchNorm, loops) vs torch {e1:.1e}, folded vs unfolded {e2:.1e} "
          f"(relative to max|logit|), numpy LSTM == torch.nn.LSTM")
    # 2. rules Zennit attached
    a = res["assigned"]
    want = {"conv.0": "alphabeta", "conv.3": "alphabeta", "g.0": "alphabeta", "g.2": "alphabeta",
            "f.0": "alphabeta", "f.2": "alphabeta", "total": "norm", "conv.1": "pass", "conv.4": "pass",
            "g.1": "pass", "g.3": "pass", "f.1": "pass"}
    assert a == want, a
    print(f"zennit attached: {a}")
    # 3. Zennit's head relevance == numpy z+/Norm written out here
    worst = 0.0
    for n in range(N):
        ri, rc, rq, lg = np_head_lrp(res["head"], image[n].numpy(), res["qs"][n].numpy(), int(res["target"][n]))
        assert np.abs(lg - res["logits"][n].numpy()).max() < 1e-12
        got = np.concatenate([res["lrp_image"][n].numpy().ravel(), res["lrp_coords"][n].numpy().ravel(),
                              res["lrp_q"][n].numpy()])
        want_ = np.concatenate([ri.ravel(), rc.ravel(), rq])
        worst = max(worst, np.abs(got - want_).max() / np.abs(want_).max())
    assert worst < 1e-10, worst
    print(f"zennit head LRP vs numpy z+ / Norm (im2col, explicit pair loop): {worst:.1e} of max|R|")
    # 4. gradient x input: the question's and the image's against central differences (a few entries)
    worst = 0.0
    for n in (0, 3):
        c = int(res["target"][n])
        for t, k in [(0, 0), (LENGTHS[n] - 1, 4)]:
            e = res["embs"][n].numpy().copy()
            hd = 1e-6
            up, dn = e.copy(), e.copy()
            up[t, k] += hd
            dn[t, k] -= hd
            fd = (np_forward(sd, image[n].numpy(), up)[c] - np_forward(sd, image[n].numpy(), dn)[c]) / (2 * hd)
            got = res["gxi_question"][n][t, k].item()
            worst = max(worst, abs(got - fd * e[t, k]) / np.abs(res["gxi_question"][n].numpy()).max())
        for (ch, y, x) in [(0, 5, 7), (2, 19, 0)]:
            im = image[n].numpy()
            up, dn = im.copy(), im.copy()
            up[ch, y, x] += 1e-6
            dn[ch, y, x] -= 1e-6
            emb = res["embs"][n].numpy()
            fd = (np_forward(sd, up, emb)[c] - np_forward(sd, dn, emb)[c]) / 2e-6
            worst = max(worst, abs(res["gxi_image"][n, ch, y, x].item() - fd * im[ch, y, x])
                        / res["gxi_image"][n].abs().max().item())
    assert worst < 1e-6, worst
    print(f"gradient x input vs central differences (numpy forward), 8 entries: {worst:.1e} of max|gxi|")
    # 5. conditioning: the same pipeline in float32
    r32 = reference(model, image, tokens, torch.float32)
    assert torch.equal(r32["target"], res["target"])
    errs = f32_errors(r32, res)
    assert max(errs.values()) <= F32_BOUND, errs
    # logits are compared element-wise (1e-5 relative): none may be a cancellation near zero
    lg = res["logits"]
    l32 = (r32["logits"].double() - lg).abs().div(lg.abs().clamp(min=1e-3)).max().item()
    small = (lg.abs().min(1).values / lg.abs().max(1).values).min().item()
    top2 = lg.topk(2, 1).values
    gap = (top2[:, 0] - top2[:, 1]).min().item()
    assert l32 <= 1e-6 and small >= 0.05 and gap >= 1.0, (l32, small, gap)
    print("float32 vs float64, per quantity, of its max|.| per sample: "
          + ", ".join(f"{k} {v:.1e}" for k, v in errs.items()) + f"; logits {l32:.1e} element-wise relative "
          f"(smallest |logit| {small:.2f} of the sample's largest); smallest top-2 logit gap {gap:.2f}")


def conservation(seed):
    """Biases zero (and BatchNorm means/shifts zero, so the folds add none): image + coordinates +
    embeddings relevance sums to the logit, up to the LSTM's eps absorption."""
    model, image, tokens = make_model(seed, zero_bias=True)
    res = reference(model, image, tokens)
    lines, worst, worst_head = [], 0.0, 0.0
    for n in range(len(LENGTHS)):
        f_c = res["logits"][n, res["target"][n]].item()
        head = res["lrp_image"][n].sum().item() + res["lrp_coords"][n].sum().item() + res["lrp_q"][n].sum().item()
        total = res["lrp_image"][n].sum().item() + res["lrp_coords"][n].sum().item() + res["lrp_question"][n].sum()
        worst_head = max(worst_head, abs(head - f_c) / abs(f_c))
        worst = max(worst, abs(total - f_c) / abs(f_c))
        lines.append(f"  sample {n}: f_c {f_c:+.6f}  image+coords+q {head:+.6f}  image+coords+embeddings {total:+.6f}")
    print("conservation (biases zero):\n" + "\n".join(lines))
    assert worst_head < 1e-5, worst_head
    assert worst < 2e-2, worst
    print(f"  head (to q) off by {worst_head:.1e} relative; down to the embeddings {worst:.1e} (LSTM eps 0.001)")


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("out", nargs="?", default=os.path.join(here, "..", "tests", "fixtures", "vqa"))
    ap.add_argument("--seed", type=int, default=22)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    print("versions:", VERSIONS)
    conservation(a.seed + 1000)
    model, image, tokens = make_model(a.seed)
    res = reference(model, image, tokens)
    check(model, image, tokens, res)
    N = len(LENGTHS)
    f32 = lambda t: torch.as_tensor(t).float().contiguous()
    cases = {"image": f32(image), "logits": f32(res["logits"]), "target": res["target"].to(torch.int64).contiguous(),
             "lrp_image": f32(res["lrp_image"]), "lrp_coords": f32(res["lrp_coords"]),
             "gxi_image": f32(res["gxi_image"]), "gxi_coords": f32(res["gxi_coords"])}
    for n in range(N):
        cases[f"tokens.{n}"] = tokens[n].to(torch.int64).contiguous()
        cases[f"lrp_question.{n}"] = f32(res["lrp_question"][n])
        cases[f"gxi_question.{n}"] = f32(res["gxi_question"][n])
    weights = {k: v.detach().clone().float().contiguous() for k, v in model.state_dict().items()
               if not k.endswith("num_batches_tracked")}
    for name, d in (("vqa_small.weights.safetensors", weights), ("vqa_small.cases.safetensors", cases)):
        path = os.path.join(a.out, name)
        save_file(d, path)
        os.chmod(path, 0o644)   # safetensors writes 0600
    for n in range(N):
        c = int(res["target"][n])
        s = (res["lrp_image"][n].sum() + res["lrp_coords"][n].sum()).item() + res["lrp_question"][n].sum()
        print(f"sample {n}: T={LENGTHS[n]} tokens={tokens[n].tolist()} target={c} logits "
              f"{np.round(res['logits'][n].numpy(), 4).tolist()} sum(R)={s:+.4f} "
              f"(image {res['lrp_image'][n].sum().item():+.4f}, coords {res['lrp_coords'][n].sum().item():+.4f}, "
              f"question {res['lrp_question'][n].sum():+.4f})")
    print("weights:", ", ".join(f"{k} {list(v.shape)}" for k, v in weights.items()))
    print("cases:", ", ".join(f"{k} {list(v.shape)} {str(v.dtype)[6:]}" for k, v in cases.items()))


if __name__ == "__main__":
    main()
