// Two inputs, but nothing on the way to the output reads `question`; and a branch no one uses.
lrp::network! {
    Net(inputs(image = [16], question = [4])) {
        img: image -> Linear(16, 8),
        unused: image -> Linear(16, 3),
        head: img -> Linear(8, 2),
    }
}

fn main() {}
