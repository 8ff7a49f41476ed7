// No `input = [...]`: reported at the network's name.
lrp::network! {
    Net(composite = EpsilonPlus) {
        Linear(4, 2),
    }
}

fn main() {}
