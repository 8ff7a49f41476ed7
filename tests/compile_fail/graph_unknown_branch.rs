// A merge names a branch that does not exist, and an entry reads an unknown input.
lrp::network! {
    Net(input = [8]) {
        stem: Linear(8, 8),
        main: { Linear(8, 8), ReLU },
        Sum(stem, mian),
        extra: features -> Linear(8, 8),
        head: Linear(8, 2),
    }
}

fn main() {}
