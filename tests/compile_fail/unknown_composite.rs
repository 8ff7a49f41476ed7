// A misspelt composite.
lrp::network! {
    Net(input = [4], composite = EpsilonGammaBoxx) {
        Linear(4, 2),
    }
}

fn main() {}
