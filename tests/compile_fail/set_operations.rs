// Set operations are checked at compile time, all at once: a sum over something that is not a
// set, pairs of something that is not a set, a pairing whose appended input is not a vector,
// and objects read from something that is not a feature map.
lrp::network! {
    Rn(inputs(image = [3, 4, 4], q = [2, 2], v = [5])) {
        flat: image -> { Flatten, Linear(48, 8) },
        total: flat -> SetSum,
        not_a_set: Pairs(flat, v),
        objects: image -> Objects,
        pairs: Pairs(objects, q),
        vector_objects: v -> Objects,
        g: pairs -> Linear(14, 4),
        joined: Concat(total, not_a_set, g, vector_objects, dim = 0),
        head: Linear(4, 2),
    }
}

fn main() {}
