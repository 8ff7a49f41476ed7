// A residual sum of two shapes and a concatenation whose other sizes differ: both are reported.
lrp::network! {
    Net(input = [3, 8, 8]) {
        Sum {
            { Conv2d(3, 4, kernel_size = 3, padding = 1) },
            {},
        },
        ReLU,
        Concat(dim = 0) {
            a: Conv2d(4, 4, kernel_size = 3),
            b: Conv2d(4, 4, kernel_size = 3, padding = 1),
        },
        Flatten,
        Linear(288, 2),
    }
}

fn main() {}
