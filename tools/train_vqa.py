#!/usr/bin/env python3
"""Train the Relation Network used by the `vqa` example and export its weights and test data.

Run from the repository root (CPU only):

    python3 tools/train_vqa.py --threads 2

`--quick` (220 training scenes, 20 warm-up steps, one epoch; 5-10 s on idle cores) is a
smoke test; `--out DIR` writes the outputs to DIR instead of examples/vqa.

Requirements: torch, safetensors, numpy (`pip install torch safetensors numpy`).

Data (Sort-of-CLEVR style; `make_scene`, `make_data`)
-----------------------------------------------------
75x75 RGB images, background RGB (128,128,128). Six objects per scene; object k always
has colour k of red (255,0,0), green (0,200,0), blue (0,0,255), orange (255,150,0),
yellow (255,255,0), purple (160,0,200), and a random shape: square (12x12 px), circle
(the pixels of the 12x12 box whose centre is within 6 px of the box centre) or triangle
(apex up, base 12 px). The 12x12 boxes lie at least 2 px apart (rejection sampling), so
objects never overlap, and inside the top-left 63x63 pixels: the convolution stack
(no padding, stride 2) never reads the last 12 rows and columns of the image, so an
object there would be invisible to the model. An object's centre is its box centre
(x0 + 5.5, y0 + 5.5) in pixel coordinates (x = column); the image centre is 37.

Question families (`families.txt`, in this order) and their answers:
  0 shape       "what shape is the red object"                         -> square/circle/triangle
  1 horizontal  "on the left or right is the red object"               -> left (centre x < 37) / right
  2 vertical    "on the top or bottom is the red object"               -> top (centre y < 37) / bottom
  3 closest     "what shape is the object closest to the red object"   -> shape of that object
  4 farthest    "what shape is the object farthest from the red object" -> shape of that object
  5 count       "how many objects have the same shape as the red object" -> 1..6 (itself included)
Distances are Euclidean between centres; a colour whose closest/farthest object is tied is
not asked (another colour is drawn). horizontal/vertical put the colour near the end of the
question: in "is the red object on the left or right" four words follow the colour and the
LSTM's final state hardly depends on it at initialisation. Vocabulary (`vocab.txt`): 28
words, id 0 = "<pad>" (never inside a question); answers (`answers.txt`): 13 classes,
square circle triangle left right top bottom 1 2 3 4 5 6. Every scene gets one question
per family, each about a random colour. `referring` = 1 << k of the named object k;
`target` = the objects the answer is about: the named one (shape/horizontal/vertical),
the closest/farthest one, or all objects with its shape (count, itself included); bit k
is object k = colour k. Training: 20000 scenes x 6 = 120000 questions from
numpy.random.default_rng(0); test: 100 scenes x 6 = 600 questions from
default_rng(1000003).

Model (the architecture the Rust spec mirrors; `RelationNetwork`)
-----------------------------------------------------------------
    conv      = 4 x [Conv2d(.., 24, 3, stride 2, no padding), ReLU, BatchNorm2d(24)]
                (conv.0/conv.2, conv.3/conv.5, conv.6/conv.8, conv.9/conv.11): 75 -> 37 -> 18 -> 8 -> 3
    embedding = Embedding(28, 32); lstm = LSTM(32, 128, batch_first)  q = h_T (its own length)
    g         = Linear(180,256) ReLU Linear(256,256) ReLU Linear(256,256) ReLU Linear(256,256) ReLU
    f         = Linear(256,256) ReLU Linear(256,256) ReLU Linear(256,256) ReLU Linear(256,13)
Input: image = uint8 / 255 (no mean/std normalisation), [B,3,75,75]. m = conv(image)
[B,24,3,3]; object k = y*3 + x is [m[:,:,y,x] (24), cx, cy] with cx = -1 + x, cy = -1 + y
(= -1 + 2x/(W-1)); pair p = i*9 + j (all 81 ordered pairs, i == j included) is the row
[o_i, o_j, q] (180); logits = f(sum over the 81 rows of g(row)). The LSTM runs over the
`lengths[k]` real tokens only (pack_padded_sequence) from h_0 = c_0 = 0, gate order
i, f, g, o. BatchNorm eps 1e-5, eval mode (running statistics). `forward_reference` is
this literal computation; `forward` is the same function with g.0 split into its
o_i / o_j / q column blocks (checked against it in float64 at start-up).

Training
--------
CPU, 2 threads, torch.manual_seed(0), deterministic algorithms. Adam lr 1e-3 (constant,
then cosine to 0 over the last quarter of the main phase), weights float32, forward and
backward under torch.autocast(bfloat16) (about 2x faster on this CPU). Each step takes
some scenes and all their questions (one conv pass per scene). Without the following the
model sat on the answer prior for tens of thousands of steps (horizontal/vertical never
left it within the time budget):
* initial values only: LSTM weights x2 and forget-gate bias +3 (so h_T carries the
  colour word), and the columns of g.0 that multiply q resp. the cell coordinates x4
  (`init_for_training`);
* a warm-up of 1250 steps on horizontal and vertical questions only (64 scenes x 2
  questions per step), which teaches g to read positions; then 18 epochs over the 20000
  scenes with all six families (11 scenes x 6 questions per step, 1818 steps per epoch);
* an auxiliary loss (weight 1, training only, not exported): a linear head on each cell's
  24 features predicts, per colour, whether that object's centre is nearest to this cell,
  its offset from the cell's receptive-field centre (15, 31 or 47 px) and its shape.

Result of the committed run (torch 2.15.0, 2 CPU cores shared with concurrent cargo
builds): whole script 1320 s wall (22.0 min; training 1312.5 s, of which the warm-up took
234 s under the heaviest contention, then about 53 s per epoch). Test accuracy (eval
mode, float32; the exported float64 logits give the same answers):
  shape 100/100, horizontal 100/100, vertical 100/100   -> non-relational 300/300 = 100.0%
  closest 90/100, farthest 70/100, count 98/100         -> relational 258/300 = 86.0%
  all 558/600 = 93.0%; last epoch's training accuracy (train mode, running) 94.8%.
Non-relational passes 95% from epoch 3, relational 75% from epoch 11. `--quick` runs
were checked to be bit-for-bit reproducible on this machine; the full run was done once.
Other torch versions / CPUs may give slightly different figures.

Outputs (under examples/vqa/, 7.1 MB)
-------------------------------------
* `weights.safetensors`: the eval-mode `state_dict`, float32, without the BatchNorm
  `num_batches_tracked` counters: conv.{0,3,6,9}.{weight [24,Cin,3,3], bias [24]},
  conv.{2,5,8,11}.{weight, bias, running_mean, running_var} [24], embedding.weight
  [28,32], lstm.{weight_ih_l0 [512,32], weight_hh_l0 [512,128], bias_ih_l0 [512],
  bias_hh_l0 [512]}, g.{0,2,4,6}.{weight, bias} ([256,180] for g.0, else [256,256]; [256]),
  f.{0,2,4}.{weight [256,256], bias [256]}, f.6.{weight [13,256], bias [13]}.
* `test_set.safetensors`: `images` uint8 [100,3,75,75]; `masks` uint8 [100,6,75,75]
  (0/1, mask k = the pixels of object k; the masks are disjoint and cover exactly the
  non-background pixels); `tokens` int64 [600,11] (question ids, 0 after the end);
  `lengths` int64 [600] (6, 9, 9, 10, 10, 11 by family); `image` int64 [600] (scene;
  question 6s+f is family f of scene s); `answer`, `family`, `target`, `referring` int64
  [600]; `logits` float32 [600,13]: the eval-mode model's output computed in float64
  (`forward_reference`) and rounded to float32. The logits are large (|logit| up to
  ~3.4e3, the sum over 81 pairs): the float32 PyTorch forward differs from them by up to
  1.8e-3, so compare with a relative tolerance.
* `vocab.txt` (line k = token id k), `answers.txt` (line k = class k), `families.txt`.
"""

import argparse
import math
import os
import random
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import save_file as save_torch
from torch.nn.utils.rnn import pack_padded_sequence

# ----------------------------------------------------------------------------
# Data set
# ----------------------------------------------------------------------------

IMG = 75
OBJ = 12                       # every shape fits a 12 x 12 pixel box
N_OBJ = 6
VISIBLE = 63                   # the conv stack reads only pixels 0..62 of each row/column
GAP = 2                        # bounding boxes of two objects are >= GAP pixels apart
BACKGROUND = (128, 128, 128)
COLOURS = ["red", "green", "blue", "orange", "yellow", "purple"]
RGB = [(255, 0, 0), (0, 200, 0), (0, 0, 255), (255, 150, 0), (255, 255, 0), (160, 0, 200)]
SHAPES = ["square", "circle", "triangle"]
FAMILIES = ["shape", "horizontal", "vertical", "closest", "farthest", "count"]
N_REL = 3                      # families 0..3 are non-relational, 3..6 relational

ANSWERS = SHAPES + ["left", "right", "top", "bottom"] + [str(k) for k in range(1, N_OBJ + 1)]


def question_words(family, colour):
    c = COLOURS[colour]
    return {
        "shape": f"what shape is the {c} object",
        "horizontal": f"on the left or right is the {c} object",
        "vertical": f"on the top or bottom is the {c} object",
        "closest": f"what shape is the object closest to the {c} object",
        "farthest": f"what shape is the object farthest from the {c} object",
        "count": f"how many objects have the same shape as the {c} object",
    }[FAMILIES[family]].split()


def build_vocab():
    words = ["<pad>"]
    for fam in range(len(FAMILIES)):
        for col in range(len(COLOURS)):
            for w in question_words(fam, col):
                if w not in words:
                    words.append(w)
    return words


VOCAB = build_vocab()
WORD_ID = {w: i for i, w in enumerate(VOCAB)}


def shape_stamps():
    """Boolean OBJ x OBJ stamps of the three shapes (pixel (r, c) covered or not)."""
    r, c = np.mgrid[0:OBJ, 0:OBJ].astype(np.float64) + 0.5   # pixel centres in the box
    centre = OBJ / 2.0
    square = np.ones((OBJ, OBJ), dtype=bool)
    circle = (r - centre) ** 2 + (c - centre) ** 2 <= (OBJ / 2.0) ** 2
    triangle = np.abs(c - centre) <= r / 2.0                 # apex at the top, base at the bottom
    return [square, circle, triangle]


STAMPS = shape_stamps()


def make_scene(rng):
    """One scene: object k has colour k, a random shape and a random position."""
    while True:
        pos = []
        for _ in range(N_OBJ):
            for _attempt in range(1000):
                x0, y0 = rng.integers(0, VISIBLE - OBJ + 1, size=2)
                if all(abs(x0 - a) >= OBJ + GAP or abs(y0 - b) >= OBJ + GAP for a, b in pos):
                    pos.append((int(x0), int(y0)))
                    break
            else:
                break
        if len(pos) == N_OBJ:
            break
    shapes = rng.integers(0, len(SHAPES), size=N_OBJ)
    image = np.empty((IMG, IMG, 3), dtype=np.uint8)
    image[:] = BACKGROUND
    masks = np.zeros((N_OBJ, IMG, IMG), dtype=np.uint8)
    for k, ((x0, y0), s) in enumerate(zip(pos, shapes)):
        masks[k, y0:y0 + OBJ, x0:x0 + OBJ] = STAMPS[s]
        image[masks[k].astype(bool)] = RGB[k]
    # Object centres in pixel-centre coordinates (pixel i has centre i); the image centre is 37.
    centres = np.array([(x0 + (OBJ - 1) / 2.0, y0 + (OBJ - 1) / 2.0) for x0, y0 in pos])
    return image.transpose(2, 0, 1).copy(), masks, shapes, centres


def answer_question(family, ref, shapes, centres):
    """(answer index, 6-bit target mask) or None when closest/farthest is a tie."""
    name = FAMILIES[family]
    mid = (IMG - 1) / 2.0
    if name == "shape":
        return int(shapes[ref]), 1 << ref
    if name == "horizontal":
        return ANSWERS.index("left" if centres[ref, 0] < mid else "right"), 1 << ref
    if name == "vertical":
        return ANSWERS.index("top" if centres[ref, 1] < mid else "bottom"), 1 << ref
    if name in ("closest", "farthest"):
        d = ((centres - centres[ref]) ** 2).sum(axis=1)
        others = [k for k in range(N_OBJ) if k != ref]
        ds = sorted(d[k] for k in others)
        best = ds[0] if name == "closest" else ds[-1]
        found = [k for k in others if d[k] == best]
        if len(found) != 1:
            return None
        return int(shapes[found[0]]), 1 << found[0]
    same = [k for k in range(N_OBJ) if shapes[k] == shapes[ref]]
    return ANSWERS.index(str(len(same))), sum(1 << k for k in same)


def make_data(n_scenes, seed, with_masks=True):
    """n_scenes scenes with one question per family each (a random colour per question)."""
    rng = np.random.default_rng(seed)
    images = np.empty((n_scenes, 3, IMG, IMG), dtype=np.uint8)
    masks = np.empty((n_scenes if with_masks else 0, N_OBJ, IMG, IMG), dtype=np.uint8)
    all_shapes = np.empty((n_scenes, N_OBJ), dtype=np.int64)
    all_centres = np.empty((n_scenes, N_OBJ, 2), dtype=np.float32)
    rows = []   # (scene, family, colour, answer, target, referring)
    for s in range(n_scenes):
        while True:
            image, mask, shapes, centres = make_scene(rng)
            qs = []
            for fam in range(len(FAMILIES)):
                for colour in rng.permutation(N_OBJ):
                    got = answer_question(fam, int(colour), shapes, centres)
                    if got is not None:
                        qs.append((s, fam, int(colour), got[0], got[1], 1 << int(colour)))
                        break
            if len(qs) == len(FAMILIES):
                break
        images[s], all_shapes[s], all_centres[s] = image, shapes, centres
        if with_masks:
            masks[s] = mask
        rows.extend(qs)
    q = len(rows)
    lengths = np.array([len(question_words(r[1], r[2])) for r in rows], dtype=np.int64)
    tokens = np.zeros((q, lengths.max()), dtype=np.int64)
    for i, r in enumerate(rows):
        ids = [WORD_ID[w] for w in question_words(r[1], r[2])]
        tokens[i, :len(ids)] = ids
    cols = np.array([r for r in rows], dtype=np.int64)
    return {
        "images": images, "masks": masks, "tokens": tokens, "lengths": lengths,
        "image": cols[:, 0].copy(), "family": cols[:, 1].copy(), "answer": cols[:, 3].copy(),
        "target": cols[:, 4].copy(), "referring": cols[:, 5].copy(),
        "shapes": all_shapes, "centres": all_centres,
    }


# ----------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------

class RelationNetwork(nn.Module):
    def __init__(self, vocab, answers):
        super().__init__()
        layers = []
        for i in range(4):
            layers += [nn.Conv2d(3 if i == 0 else 24, 24, 3, stride=2), nn.ReLU(), nn.BatchNorm2d(24)]
        self.conv = nn.Sequential(*layers)
        self.embedding = nn.Embedding(vocab, 32)
        self.lstm = nn.LSTM(32, 128, batch_first=True)
        d = 2 * 26 + 128
        self.g = nn.Sequential(nn.Linear(d, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                               nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU())
        self.f = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                               nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, answers))

    def question(self, tokens, lengths):
        """Final hidden state h_T of each question at its own length: [B, 128]."""
        emb = self.embedding(tokens)
        packed = pack_padded_sequence(emb, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, (h, _) = self.lstm(packed)
        return h[0]

    def objects(self, images):
        """[B, N = H*W, C + 2]: object k = y*W + x is [m[:, :, y, x], cx, cy]."""
        m = self.conv(images)
        b, c, h, w = m.shape
        feats = m.permute(0, 2, 3, 1).reshape(b, h * w, c)
        ys, xs = torch.meshgrid(torch.arange(h, dtype=m.dtype), torch.arange(w, dtype=m.dtype),
                                indexing="ij")
        cx = -1 + 2 * xs / (w - 1)
        cy = -1 + 2 * ys / (h - 1)
        coords = torch.stack([cx.reshape(-1), cy.reshape(-1)], dim=1).to(m.device)
        return torch.cat([feats, coords.unsqueeze(0).expand(b, -1, -1)], dim=2)

    def forward(self, images, tokens, lengths, scene=None, return_objects=False):
        """Fast forward: g.0 on [o_i, o_j, q] split into W_i o_i + W_j o_j + (W_q q + b).

        Same function as `forward_reference` (pair p = i*N + j, g applied to every pair,
        summed over the N*N pairs), without materialising the concatenated rows.
        """
        o = self.objects(images)
        q = self.question(tokens, lengths)
        d = o.shape[2]
        w = self.g[0].weight
        a = o @ w[:, :d].t()                                   # [S, N, 256] (o_i part)
        c = o @ w[:, d:2 * d].t()                              # [S, N, 256] (o_j part)
        if scene is not None:                                  # question k is about images[scene[k]]
            a, c = a[scene], c[scene]
        e = q @ w[:, 2 * d:].t() + self.g[0].bias              # [B, 256]
        b, n = a.shape[:2]
        h = (a[:, :, None, :] + c[:, None, :, :] + e[:, None, None, :]).reshape(b, n * n, -1)
        h = self.g[1:](h)
        logits = self.f(h.sum(dim=1))
        return (logits, o) if return_objects else logits

    def forward_reference(self, images, tokens, lengths):
        """The literal semantics: rows [o_i, o_j, q] for p = i*N + j, g, sum, f."""
        o = self.objects(images)
        q = self.question(tokens, lengths)
        b, n, d = o.shape
        oi = o[:, :, None, :].expand(b, n, n, d)
        oj = o[:, None, :, :].expand(b, n, n, d)
        qq = q[:, None, None, :].expand(b, n, n, q.shape[1])
        rows = torch.cat([oi, oj, qq], dim=3).reshape(b, n * n, 2 * d + q.shape[1])
        return self.f(self.g(rows).sum(dim=1))


# ----------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------

CELL_CENTRES = (15.0, 31.0, 47.0)   # pixel centre of the receptive field of cell column/row 0, 1, 2


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)


def init_for_training(model, forget_bias=3.0, lstm_gain=2.0, q_gain=4.0, coord_gain=4.0):
    """Initialisation that lets the question and the cell coordinates reach g from step one.

    With PyTorch's default initialisation the LSTM's final state hardly depends on the colour
    word (it changes h_T by ~0.002 when four words follow it), and the 2 coordinate inputs of
    each object are small next to its 24 BatchNorm-ed features, so g cannot tell which object
    is asked about or where it is, and training sits on the answer prior for a long time.
    Remedy (initial values only; the architecture is unchanged): LSTM weights x lstm_gain,
    forget-gate bias + forget_bias, and the columns of g.0 that multiply q resp. the
    coordinates (cx, cy of o_i and of o_j) x q_gain resp. x coord_gain.
    """
    c = 24
    with torch.no_grad():
        for name, p in model.lstm.named_parameters():
            if name.startswith("weight"):
                p.mul_(lstm_gain)
        model.lstm.bias_ih_l0[128:256] += forget_bias      # gate order i, f, g, o
        w = model.g[0].weight                              # columns: o_i (26), o_j (26), q (128)
        w[:, 2 * (c + 2):].mul_(q_gain)
        w[:, c:c + 2].mul_(coord_gain)
        w[:, 2 * c + 2:2 * c + 4].mul_(coord_gain)


class CellHead(nn.Module):
    """Auxiliary head (training only, not exported): from each cell's 24 features predict,
    per colour, whether that object's centre is nearest to this cell, its offset from the
    cell's receptive-field centre, and its shape."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(24, N_OBJ * 6)

    def loss(self, feats, shapes, centres):
        """feats [S, 9, 24]; shapes [S, 6]; centres [S, 6, 2] (x, y in pixels)."""
        s = feats.shape[0]
        out = self.lin(feats).float().reshape(s, 9, N_OBJ, 6)       # presence, dx, dy, 3 shape logits
        cell = torch.tensor(CELL_CENTRES)
        ix = (centres[:, :, 0, None] - cell).abs().argmin(-1)
        iy = (centres[:, :, 1, None] - cell).abs().argmin(-1)
        k = iy * 3 + ix                                              # [S, 6] nearest cell
        present = torch.zeros(s, 9, N_OBJ)
        present.scatter_(1, k[:, None, :], 1.0)
        offset = torch.stack([(centres[:, :, 0] - cell[ix]) / 16, (centres[:, :, 1] - cell[iy]) / 16], -1)
        at = out.gather(1, k[:, None, :, None].expand(-1, 1, N_OBJ, 6)).squeeze(1)   # [S, 6, 6]
        return (F.binary_cross_entropy_with_logits(out[..., 0], present)
                + F.mse_loss(at[..., 1:3], offset)
                + F.cross_entropy(at[..., 3:].reshape(-1, 3), shapes.reshape(-1)))


def to_torch(data):
    return {k: torch.from_numpy(v) for k, v in data.items()}


def batch_inputs(data, idx):
    """Per-question inputs (one image per question), for evaluation."""
    images = data["images"][data["image"][idx]].float() / 255.0
    lengths = data["lengths"][idx]
    tokens = data["tokens"][idx][:, :int(lengths.max())]
    return images, tokens, lengths


@torch.no_grad()
def predict(model, data, batch=256):
    model.eval()
    out = []
    for i in range(0, len(data["answer"]), batch):
        idx = torch.arange(i, min(i + batch, len(data["answer"])))
        out.append(model(*batch_inputs(data, idx)))
    return torch.cat(out)


def family_report(pred, data):
    """Per-family accuracy plus the non-relational / relational / overall totals."""
    ok = (pred == data["answer"])
    fam = data["family"]
    res = {}
    for k, name in enumerate(FAMILIES):
        sel = fam == k
        res[name] = (int(ok[sel].sum()), int(sel.sum()))
    for name, sel in (("non-relational", fam < N_REL), ("relational", fam >= N_REL),
                      ("all", torch.ones_like(fam, dtype=torch.bool))):
        res[name] = (int(ok[sel].sum()), int(sel.sum()))
    return res


def fmt(res, keys=None):
    keys = keys or list(res)
    return "  ".join(f"{k} {100.0 * res[k][0] / max(1, res[k][1]):.1f}%" for k in keys)


def train_step(model, head, opt, data, scenes, families, aux_weight):
    """One Adam step on the questions of `families` about `scenes` (one conv pass per scene)."""
    nf = len(families)
    q = (scenes[:, None] * len(FAMILIES) + torch.tensor(families)).reshape(-1)   # question rows
    images = data["images"][scenes].float() / 255.0
    lengths = data["lengths"][q]
    tokens = data["tokens"][q][:, :int(lengths.max())]
    scene = torch.arange(len(scenes)).repeat_interleave(nf)
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, objects = model(images, tokens, lengths, scene, return_objects=True)
        aux = head.loss(objects[:, :, :24], data["shapes"][scenes], data["centres"][scenes])
    loss = F.cross_entropy(logits.float(), data["answer"][q])
    opt.zero_grad()
    (loss + aux_weight * aux).backward()
    opt.step()
    return loss.item(), int((logits.argmax(1) == data["answer"][q]).sum()), len(q)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join("examples", "vqa"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="tiny data set, one epoch (smoke test)")
    ap.add_argument("--train-scenes", type=int, default=20000)
    ap.add_argument("--test-scenes", type=int, default=100)
    ap.add_argument("--warm-steps", type=int, default=1250)
    ap.add_argument("--warm-scenes", type=int, default=64, help="scenes per warm-up step")
    ap.add_argument("--epochs", type=int, default=18)
    ap.add_argument("--scenes-per-step", type=int, default=11)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--aux", type=float, default=1.0, help="weight of the auxiliary cell loss")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.quick:
        args.train_scenes, args.warm_steps, args.epochs = 220, 20, 1

    t_start = time.time()
    seed_everything(args.seed)
    torch.set_num_threads(args.threads)

    train_np = make_data(args.train_scenes, seed=args.seed, with_masks=False)
    test_np = make_data(args.test_scenes, seed=args.seed + 1_000_003)
    train, test = to_torch(train_np), to_torch(test_np)
    n_scenes = args.train_scenes
    print(f"torch {torch.__version__}; vocabulary {len(VOCAB)} words, {len(ANSWERS)} answers; "
          f"train {n_scenes} scenes / {len(train['answer'])} questions, test {args.test_scenes} "
          f"scenes / {len(test['answer'])} questions (data {time.time() - t_start:.1f} s)", flush=True)

    model = RelationNetwork(len(VOCAB), len(ANSWERS))
    init_for_training(model)
    head = CellHead()
    with torch.no_grad():   # the fast forward computes the literal semantics
        model.eval().double()
        idx = torch.arange(12)
        images, tokens, lengths = batch_inputs(test, idx)
        a = model(images.double(), tokens, lengths)
        b = model.forward_reference(images.double(), tokens, lengths)
        uniq, scene = torch.unique(test["image"][idx], return_inverse=True)
        c = model(test["images"][uniq].double() / 255.0, tokens, lengths, scene)
        model.float()
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-9) and torch.allclose(a, c, rtol=1e-9, atol=1e-9)

    opt = torch.optim.Adam(list(model.parameters()) + list(head.parameters()), lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed)
    steps_per_epoch = n_scenes // args.scenes_per_step
    main_steps = args.epochs * steps_per_epoch
    decay_from = int(0.75 * main_steps)   # constant lr, then cosine to 0 over the last quarter
    t_train = time.time()

    # Warm-up: horizontal and vertical questions only (they teach g to read positions).
    warm_families = [FAMILIES.index("horizontal"), FAMILIES.index("vertical")]
    total, correct, count = 0.0, 0, 0
    for step in range(args.warm_steps):
        scenes = torch.randint(0, n_scenes, (args.warm_scenes,), generator=gen)
        l, c, n = train_step(model, head, opt, train, scenes, warm_families, args.aux)
        total, correct, count = total + l * n, correct + c, count + n
    if args.warm_steps:
        res = family_report(predict(model, test).argmax(1), test)
        print(f"warm-up {args.warm_steps} steps  {time.time() - t_train:7.1f} s  loss {total / count:.4f}  "
              f"train acc {100.0 * correct / count:.1f}%  test: {fmt(res, ['horizontal', 'vertical'])}",
              flush=True)

    all_families = list(range(len(FAMILIES)))
    step = 0
    for epoch in range(args.epochs):
        perm = torch.randperm(n_scenes, generator=gen)
        total, correct, count = 0.0, 0, 0
        for i in range(steps_per_epoch):
            if step >= decay_from:
                frac = (step - decay_from) / max(1, main_steps - decay_from)
                for group in opt.param_groups:
                    group["lr"] = args.lr * 0.5 * (1.0 + math.cos(math.pi * frac))
            scenes = perm[i * args.scenes_per_step:(i + 1) * args.scenes_per_step]
            l, c, n = train_step(model, head, opt, train, scenes, all_families, args.aux)
            total, correct, count = total + l * n, correct + c, count + n
            step += 1
        res = family_report(predict(model, test).argmax(1), test)
        print(f"epoch {epoch + 1:3d}  {time.time() - t_train:7.1f} s  loss {total / count:.4f}  "
              f"train acc {100.0 * correct / count:.1f}%  test: {fmt(res)}", flush=True)
    train_s = time.time() - t_train

    model.eval()
    res = family_report(predict(model, test).argmax(1), test)
    print(f"final test accuracy (float32): {fmt(res)}")
    print("  " + "  ".join(f"{k} {c}/{n}" for k, (c, n) in res.items()))
    print(f"training {train_s:.1f} s")

    os.makedirs(args.out, exist_ok=True)
    state = {name: t.detach().float().contiguous() for name, t in model.state_dict().items()
             if not name.endswith("num_batches_tracked")}
    weights_path = os.path.join(args.out, "weights.safetensors")
    save_torch(state, weights_path)

    # Reference logits of the eval-mode model in float64 (literal pair semantics), as float32.
    with torch.no_grad():
        model.double()
        images, tokens, lengths = batch_inputs(test, torch.arange(len(test["answer"])))
        logits = model.forward_reference(images.double(), tokens, lengths).float()
        model.float()
    res64 = family_report(logits.argmax(1), test)
    print(f"exported logits (float64 forward): {fmt(res64, ['non-relational', 'relational', 'all'])}")
    test_out = {k: v for k, v in test_np.items() if k not in ("shapes", "centres")}
    test_out["logits"] = logits.numpy()
    test_out = {k: np.ascontiguousarray(v) for k, v in test_out.items()}
    test_path = os.path.join(args.out, "test_set.safetensors")
    save_numpy(test_out, test_path)
    for name, items in (("vocab.txt", VOCAB), ("answers.txt", ANSWERS), ("families.txt", FAMILIES)):
        with open(os.path.join(args.out, name), "w") as fh:
            fh.write("\n".join(items) + "\n")

    for name in sorted(os.listdir(args.out)):
        p = os.path.join(args.out, name)
        print(f"wrote {p} ({os.path.getsize(p)} bytes)")
    print(f"total wall time {time.time() - t_start:.1f} s")


if __name__ == "__main__":
    main()
