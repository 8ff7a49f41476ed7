// `a` reads `b`, which reads `a`.
lrp::network! {
    Net(input = [8]) {
        a: b -> Linear(8, 8),
        b: a -> Linear(8, 8),
        Sum(a, input),
        head: Linear(8, 2),
    }
}

fn main() {}
