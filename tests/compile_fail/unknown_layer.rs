// A layer kind the spec language does not know.
lrp::network! {
    Net(input = [3, 8, 8, 8]) {
        Conv3d(3, 8, kernel_size = 3),
        Flatten,
        Linear(1728, 10),
    }
}

fn main() {}
