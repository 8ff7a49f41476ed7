// Numbers the compiler cannot honour: each is an error at its token, all reported at once.

// Floats beyond f32 (and f64), below f32's normal range, and empty bound lists.
lrp::network! {
    Floats(input = [4], composite = EpsilonGammaBox(low = [], high = 1.0)) {
        BatchNorm1d(4, eps = 1e309),
        Linear(4, 4, rule = Epsilon(1e39)),
        Linear(4, 4, rule = Epsilon(1e-46)),
        Linear(4, 2, rule = ZBox(low = [], high = 1.0)),
    }
}

// Zero sizes, and sizes beyond the limits.
lrp::network! {
    Sizes(input = [3, 4294967296, 8]) {
        Conv2d(3, 0, 3, padding = 4294967296),
        BatchNorm2d(0),
        Flatten,
        Linear(16, 0),
    }
}

lrp::network! {
    Recurrent(input = tokens) {
        Embedding(10, 4),
        LSTM(4, 4, num_layers = 65),
        Linear(4, 2),
    }
}

fn main() {}
