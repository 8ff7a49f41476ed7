//! BatchNorm in all three placements (folded into the layer before, folded into the layer after,
//! kept explicit) gives the logits of a naive, unfolded float64 forward pass.

use lrp::runtime::weights::serialize_f32;

lrp::network! {
    BnNet(input = [2, 7, 7], composite = EpsilonPlus) {
        conv1: Conv2d(2, 3, kernel_size = 3, padding = 1),
        bn1: BatchNorm2d(3),
        relu1: ReLU,
        bn2: BatchNorm2d(3),
        conv2: Conv2d(3, 4, kernel_size = 3, stride = 2),
        relu2: ReLU,
        bn3: BatchNorm2d(4),
        conv3: Conv2d(4, 4, kernel_size = 3, padding = 1),
        relu3: ReLU,
        flatten: Flatten,
        bn4: BatchNorm1d(36),
        fc: Linear(36, 3),
    }
}

/// Deterministic pseudo-random values in [-1, 1].
fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 33) as f64 / (1u64 << 31) as f64 * 2.0 - 1.0) as f32
        })
        .collect()
}

struct Bn {
    gamma: Vec<f32>,
    beta: Vec<f32>,
    mean: Vec<f32>,
    var: Vec<f32>,
}

fn bn(seed: u64, c: usize) -> Bn {
    let v = values(seed, 4 * c);
    Bn {
        gamma: v[..c].iter().map(|x| 1.0 + 0.5 * x).collect(),
        beta: v[c..2 * c].to_vec(),
        mean: v[2 * c..3 * c].to_vec(),
        var: v[3 * c..].iter().map(|x| 1.0 + 0.5 * x).collect(),
    }
}

fn apply_bn(b: &Bn, x: &[f64], spatial: usize) -> Vec<f64> {
    x.iter()
        .enumerate()
        .map(|(i, v)| {
            let c = i / spatial;
            (v - b.mean[c] as f64) / (b.var[c] as f64 + 1e-5).sqrt() * b.gamma[c] as f64 + b.beta[c] as f64
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn conv(
    x: &[f64],
    c: usize,
    h: usize,
    w: &[f32],
    b: &[f32],
    o: usize,
    k: usize,
    stride: usize,
    pad: usize,
) -> (Vec<f64>, usize) {
    let oh = (h + 2 * pad - k) / stride + 1;
    let mut out = vec![0.0; o * oh * oh];
    for oc in 0..o {
        for oy in 0..oh {
            for ox in 0..oh {
                let mut s = b[oc] as f64;
                for ic in 0..c {
                    for ky in 0..k {
                        for kx in 0..k {
                            let (y, xx) =
                                ((oy * stride + ky) as i64 - pad as i64, (ox * stride + kx) as i64 - pad as i64);
                            if y >= 0 && xx >= 0 && (y as usize) < h && (xx as usize) < h {
                                s += x[(ic * h + y as usize) * h + xx as usize]
                                    * w[((oc * c + ic) * k + ky) * k + kx] as f64;
                            }
                        }
                    }
                }
                out[(oc * oh + oy) * oh + ox] = s;
            }
        }
    }
    (out, oh)
}

fn relu(x: Vec<f64>) -> Vec<f64> {
    x.into_iter().map(|v| v.max(0.0)).collect()
}

#[test]
fn every_placement_matches_the_unfolded_forward_pass() {
    let (w1, b1) = (values(1, 3 * 2 * 9), values(2, 3));
    let (w2, b2) = (values(3, 4 * 3 * 9), values(4, 4));
    let (w3, b3) = (values(5, 4 * 4 * 9), values(6, 4));
    let (wf, bf) = (values(7, 3 * 36), values(8, 3));
    let bns = [bn(10, 3), bn(11, 3), bn(12, 4), bn(13, 36)];
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = vec![
        ("conv1.weight".into(), vec![3, 2, 3, 3], w1.clone()),
        ("conv1.bias".into(), vec![3], b1.clone()),
        ("conv2.weight".into(), vec![4, 3, 3, 3], w2.clone()),
        ("conv2.bias".into(), vec![4], b2.clone()),
        ("conv3.weight".into(), vec![4, 4, 3, 3], w3.clone()),
        ("conv3.bias".into(), vec![4], b3.clone()),
        ("fc.weight".into(), vec![3, 36], wf.clone()),
        ("fc.bias".into(), vec![3], bf.clone()),
    ];
    for (name, b) in ["bn1", "bn2", "bn3", "bn4"].iter().zip(&bns) {
        let c = b.gamma.len();
        for (t, v) in [("weight", &b.gamma), ("bias", &b.beta), ("running_mean", &b.mean), ("running_var", &b.var)] {
            tensors.push((format!("{name}.{t}"), vec![c], v.clone()));
        }
    }
    let refs: Vec<(&str, &[usize], &[f32])> =
        tensors.iter().map(|(n, s, d)| (n.as_str(), s.as_slice(), d.as_slice())).collect();
    let model = BnNet::from_bytes(&serialize_f32(&refs).unwrap()).expect("load");

    let input = values(20, 2 * 49);
    let x: Vec<f64> = input.iter().map(|&v| v as f64).collect();
    let (z1, h1) = conv(&x, 2, 7, &w1, &b1, 3, 3, 1, 1);
    let a1 = apply_bn(&bns[1], &relu(apply_bn(&bns[0], &z1, h1 * h1)), h1 * h1);
    let (z2, h2) = conv(&a1, 3, h1, &w2, &b2, 4, 3, 2, 0);
    let a2 = apply_bn(&bns[2], &relu(z2), h2 * h2);
    let (z3, _) = conv(&a2, 4, h2, &w3, &b3, 4, 3, 1, 1);
    let a3 = apply_bn(&bns[3], &relu(z3), 1);
    let want: Vec<f64> =
        (0..3).map(|o| bf[o] as f64 + (0..36).map(|j| wf[o * 36 + j] as f64 * a3[j]).sum::<f64>()).collect();

    let mut ws = model.workspace(1).unwrap();
    let got = model.predict(&mut ws, &input).expect("predict");
    for (g, w) in got.iter().zip(&want) {
        assert!((*g as f64 - w).abs() <= 1e-4 * w.abs().max(1.0), "{got:?} vs {want:?}");
    }
    // bn1 folds into conv1 (before it), bn2 into conv2 (after it: no padding), bn3 stays
    // explicit (conv3 pads), bn4 folds into fc through the flatten.
    assert_ne!(model.conv1.weight(), &w1[..]);
    assert_ne!(model.conv2.weight(), &w2[..]);
    assert_eq!(model.conv3.weight(), &w3[..]);
    assert_ne!(model.fc.weight(), &wf[..]);
    let e = model.explain(&mut ws, &input, lrp::Target::Predicted).expect("explain");
    assert!(e.relevance.iter().all(|r| r.is_finite()));
}
