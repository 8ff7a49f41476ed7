// z^B needs the input's range, so it cannot explain a layer after a ReLU.
lrp::network! {
    Net(input = [4]) {
        fc1: Linear(4, 8),
        ReLU,
        fc2: Linear(8, 2, rule = ZBox(low = 0, high = 1)),
    }
}

fn main() {}
