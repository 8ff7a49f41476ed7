// A shape mismatch and an unknown parameter in one spec: both are reported.
lrp::network! {
    Net(input = [4]) {
        fc1: Linear(4, 8),
        ReLU,
        fc2: Linear(6, 4),
        fc3: Linear(4, 4, biass = false),
    }
}

fn main() {}
