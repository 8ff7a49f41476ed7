// `pool1` keeps conv1's 8 channels, but `conv2` declares 16: reported at `conv2`.
lrp::network! {
    Net(input = [3, 16, 16]) {
        conv1: Conv2d(3, 8, kernel_size = 3, padding = 1),
        pool1: MaxPool2d(2),
        conv2: Conv2d(16, 16, kernel_size = 3, padding = 1),
        Flatten,
        fc: Linear(1024, 10),
    }
}

fn main() {}
