// Two bad rules in one network: both are reported by one compile.
lrp::network! {
    Net(input = [3, 8, 8]) {
        Conv2d(3, 4, kernel_size = 3, rule = AlphaBeta(alpha = 2, beta = 2)),
        ReLU,
        Conv2d(4, 4, kernel_size = 3, rule = Gamma(-0.5)),
        Flatten,
        Linear(64, 10),
    }
}

fn main() {}
