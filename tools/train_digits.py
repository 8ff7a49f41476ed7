#!/usr/bin/env python3
"""Train the small CNN used by the `digits` example and export its weights and test data.

Run from the repository root:

    python3 tools/train_digits.py

Requirements: torch, scikit-learn, safetensors, numpy, pillow
(`pip install torch scikit-learn safetensors numpy pillow`).

Data
----
`sklearn.datasets.load_digits()`: 1797 grayscale 8x8 images, pixel values 0..16,
10 classes. Pixels are scaled to [0, 1] by dividing by 16. The split is
`train_test_split(test_size=0.2, random_state=0, stratify=y)`: 1437 training
images, 360 test images.

Result of the committed run (CPU, torch 2.15.0, 60 epochs of Adam, lr 1e-3 with
cosine decay, batch 64, random +-1 pixel shift augmentation, seed 0):
trained on 1437 images, train accuracy 99.16% (1425/1437, eval mode, no
augmentation), test accuracy 99.17% (357/360). Takes about 40 s on 2 CPU cores
and is bit-for-bit reproducible there (deterministic algorithms, fixed seeds);
other torch versions / CPUs may give slightly different figures.

Outputs (under examples/digits/)
--------------------------------
* `weights.safetensors`: the eval-mode model's `state_dict`, every float tensor
  as float32. Names (nn.Sequential indices): `features.0.{weight,bias}` conv1
  [16,1,3,3]; `features.1.{weight,bias,running_mean,running_var}` BN1 [16];
  `features.4.{weight,bias}` conv2 [32,16,3,3];
  `features.5.{weight,bias,running_mean,running_var}` BN2 [32];
  `classifier.0.{weight,bias}` [64,128] / [64]; `classifier.3.{weight,bias}`
  [10,64] / [10] (index 3, after ReLU and Dropout). BatchNorm eps is 1e-5. The
  BatchNorm `num_batches_tracked` counters
  (`features.1.num_batches_tracked`, `features.5.num_batches_tracked`) are
  kept as rank-0 (shape []) int64 tensors, exactly as PyTorch saves them,
  so the loader must cope with (or skip) them.
* `test_set.safetensors`: `images` float32 [N,1,8,8] (the whole test split,
  scaled to [0,1]), `labels` int64 [N], and `logits` float32 [N,10] = the
  eval-mode model's output on those images, computed in float64
  (`model.double()`) and then rounded to float32, for checking the Rust
  forward pass.
* `images/digit_<label>_<index>.png`: three test images of different classes
  (`<index>` is the row in the test split), as 8-bit grayscale PNGs upscaled
  to 64x64 by nearest neighbour: each 8x8 input pixel becomes an 8x8 block of
  value round(pixel * 255). The Rust example reads such a PNG and recovers the
  8x8 input by averaging each 8x8 block and dividing by 255. Since the
  data are multiples of 1/16, that recovers the test-set pixels only to within
  0.5/255; the exact inputs are in test_set.safetensors.

Model (the architecture the Rust spec mirrors)
----------------------------------------------
    features:   Conv2d(1,16,3,p=1) BatchNorm2d(16) ReLU MaxPool2d(2)   -> 16x4x4
                Conv2d(16,32,3,p=1) BatchNorm2d(32) ReLU AvgPool2d(2)  -> 32x2x2
    classifier: Linear(128,64) ReLU Dropout(0.2) Linear(64,10)
torch.flatten is channel-major: input index of classifier.0 = c*4 + y*2 + x.
Linear weights are [out, in]; conv weights are [out_c, in_c, kh, kw].
"""

import os
import random

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

SEED = 0
EPOCHS = 60
BATCH = 64
LR = 1e-3
OUT_DIR = os.path.join("examples", "digits")
PNG_SCALE = 8  # each 8x8 input pixel becomes an 8x8 block -> 64x64 PNG


class DigitsCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),   # 16x4x4
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.AvgPool2d(2))  # 32x2x2
        self.classifier = nn.Sequential(nn.Linear(128, 64), nn.ReLU(), nn.Dropout(0.2), nn.Linear(64, 10))

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)


def random_shift(x, gen):
    """Shift each image by -1, 0 or +1 pixels in x and y (zero fill)."""
    n = x.shape[0]
    padded = F.pad(x, (1, 1, 1, 1))
    dy = torch.randint(0, 3, (n,), generator=gen)
    dx = torch.randint(0, 3, (n,), generator=gen)
    out = torch.empty_like(x)
    for i in range(n):
        out[i] = padded[i, :, dy[i]:dy[i] + 8, dx[i]:dx[i] + 8]
    return out


@torch.no_grad()
def accuracy(model, x, y):
    model.eval()
    pred = model(x).argmax(dim=1)
    return (pred == y).sum().item(), len(y)


def main():
    seed_everything(SEED)
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))

    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[:, None, :, :]  # [N,1,8,8] in [0,1]
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
    x_tr, x_te = torch.from_numpy(x_tr), torch.from_numpy(x_te)
    y_tr, y_te = torch.from_numpy(y_tr), torch.from_numpy(y_te)

    model = DigitsCNN()
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=EPOCHS)
    gen = torch.Generator().manual_seed(SEED)

    for epoch in range(EPOCHS):
        model.train()
        perm = torch.randperm(len(y_tr), generator=gen)
        total = 0.0
        for i in range(0, len(perm), BATCH):
            idx = perm[i:i + BATCH]
            xb = random_shift(x_tr[idx], gen)
            loss = F.cross_entropy(model(xb), y_tr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        sched.step()
        if (epoch + 1) % 10 == 0:
            c, n = accuracy(model, x_te, y_te)
            print(f"epoch {epoch + 1:3d}  loss {total / len(y_tr):.4f}  test acc {100.0 * c / n:.2f}%")

    model.eval()
    tr_c, tr_n = accuracy(model, x_tr, y_tr)
    te_c, te_n = accuracy(model, x_te, y_te)
    print(f"trained on {tr_n} images, train accuracy {100.0 * tr_c / tr_n:.2f}% ({tr_c}/{tr_n})")
    print(f"test accuracy {100.0 * te_c / te_n:.2f}% ({te_c}/{te_n})")

    os.makedirs(os.path.join(OUT_DIR, "images"), exist_ok=True)

    # Weights: floats as float32, num_batches_tracked kept as int64 (as PyTorch saves it).
    state = {}
    for name, t in model.state_dict().items():
        t = t.detach().cpu()
        state[name] = (t.float() if t.is_floating_point() else t).contiguous()
    weights_path = os.path.join(OUT_DIR, "weights.safetensors")
    save_file(state, weights_path)

    # Reference logits from the eval-mode model in float64, stored as float32.
    with torch.no_grad():
        logits = model.double()(x_te.double()).float()
    model.float()
    test_path = os.path.join(OUT_DIR, "test_set.safetensors")
    save_file({"images": x_te.contiguous(), "labels": y_te.contiguous(), "logits": logits.contiguous()},
              test_path)

    # Three sample PNGs of different classes that the model classifies correctly.
    pred = logits.argmax(dim=1)
    written, seen = [], set()
    for wanted in (3, 7, 0, 1, 2, 4, 5, 6, 8, 9):
        for i in range(len(y_te)):
            if y_te[i].item() == wanted and pred[i].item() == wanted and wanted not in seen:
                seen.add(wanted)
                img = np.rint(x_te[i, 0].numpy().astype(np.float64) * 255.0).clip(0, 255).astype(np.uint8)
                big = np.kron(img, np.ones((PNG_SCALE, PNG_SCALE), dtype=np.uint8))
                path = os.path.join(OUT_DIR, "images", f"digit_{wanted}_{i}.png")
                Image.fromarray(big).save(path)
                written.append(path)
                break
        if len(written) == 3:
            break

    for p in [weights_path, test_path] + written:
        print(f"wrote {p} ({os.path.getsize(p)} bytes)")


if __name__ == "__main__":
    main()
