#!/usr/bin/env python3
"""Reference timing for BENCHMARKS.md: a direct numpy implementation of LRP-all (epsilon 0.001)
for a bidirectional LSTM text classifier of the size of `benches/models.rs` (embedding 60,
hidden 60, 5 classes, 50 tokens), written like the LSTM-LRP reference code (Arras et al.): one
forward pass keeping gates and states, then the backward relevance pass per direction.

    python3 benches/reference/lstm_lrp_numpy.py [--threads N]

Prints `bilstm/numpy/predict/1 ms` and `bilstm/numpy/explain/1 ms` (medians).
"""
import argparse
import os
import statistics
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    a = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    import numpy as np

    rng = np.random.default_rng(0)
    V, e, d, C, T, eps = 1000, 60, 60, 5, 50, 0.001
    E = rng.normal(0, 0.5, (V, e))
    dirs = [dict(Wx=rng.normal(0, 0.3, (4 * d, e)), Wh=rng.normal(0, 0.3, (4 * d, d)), b=rng.normal(0, 0.1, 4 * d))
            for _ in range(2)]
    Wy = rng.normal(0, 0.3, (C, 2 * d))
    tokens = rng.integers(0, V, T)

    def lrp_linear(hin, w, hout, rout):
        # R_in_j = sum_k hin_j w_kj R_k / (hout_k + eps sign(hout_k)), w: [out, in]
        sign = np.where(hout >= 0, 1.0, -1.0)
        return (w * hin[None, :] * (rout / (hout + eps * sign))[:, None]).sum(0)

    def forward(x):
        states = []
        for k, p in enumerate(dirs):
            seq = x if k == 0 else x[::-1]
            h, c = np.zeros(d), np.zeros(d)
            hs, cs, gs, zs = [h], [c], [], []
            for t in range(T):
                z = p["Wx"] @ seq[t] + p["Wh"] @ h + p["b"]
                i, f = 1 / (1 + np.exp(-z[:d])), 1 / (1 + np.exp(-z[d:2 * d]))
                g, o = np.tanh(z[2 * d:3 * d]), 1 / (1 + np.exp(-z[3 * d:]))
                c = f * c + i * g
                h = o * np.tanh(c)
                hs.append(h); cs.append(c); gs.append((i, f, g, o)); zs.append(z)
            states.append((seq, hs, cs, gs, zs))
        y = Wy @ np.concatenate([states[0][1][-1], states[1][1][-1]])
        return y, states

    def explain(x):
        y, states = forward(x)
        c_ = int(y.argmax())
        rout = np.zeros(C); rout[c_] = y[c_]
        hcat = np.concatenate([states[0][1][-1], states[1][1][-1]])
        rh_top = lrp_linear(hcat, Wy, y, rout)
        rx = np.zeros((T, e))
        for k, (seq, hs, cs, gs, zs) in enumerate(states):
            p = dirs[k]
            rh, rc = rh_top[k * d:(k + 1) * d].copy(), np.zeros(d)
            rxk = np.zeros((T, e))
            for t in reversed(range(T)):
                i, f, g, o = gs[t]
                rc = rc + rh
                rc_prev = lrp_linear(f * cs[t], np.eye(d), cs[t + 1], rc)
                rg = lrp_linear(i * g, np.eye(d), cs[t + 1], rc)
                zg = zs[t][2 * d:3 * d]
                rxk[t] = lrp_linear(seq[t], p["Wx"][2 * d:3 * d], zg, rg)
                rh = lrp_linear(hs[t], p["Wh"][2 * d:3 * d], zg, rg)
                rc = rc_prev
            rx += rxk if k == 0 else rxk[::-1]
        return rx

    x = E[tokens]
    def med(fn, n=20):
        fn()
        ts = []
        for _ in range(n):
            t = time.perf_counter(); fn(); ts.append((time.perf_counter() - t) * 1e3)
        return statistics.median(ts)
    print(f"bilstm/numpy/predict/1 {med(lambda: forward(x)):.3f}")
    print(f"bilstm/numpy/explain/1 {med(lambda: explain(x)):.3f}")


if __name__ == "__main__":
    main()
