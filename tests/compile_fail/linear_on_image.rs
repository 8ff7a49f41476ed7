// A Linear layer cannot read a [channels, height, width] image.
lrp::network! {
    Net(input = [1, 8, 8]) {
        conv: Conv2d(1, 4, kernel_size = 3),
        ReLU,
        fc: Linear(144, 10),
    }
}

fn main() {}
