// The derive front-end reports the same errors as `network!`, at the struct's tokens.
use lrp::runtime::layers::{Flatten, Linear};

/// Not a layer kind `lrp` knows.
#[allow(dead_code)]
struct Conv3d;

#[derive(lrp::Explainable)]
#[lrp(input = [4])]
struct UnknownLayer {
    #[lrp(4, 4, kernel_size = 3)]
    conv: Conv3d,
    flatten: Flatten,
    #[lrp(4, 2)]
    fc: Linear,
}

#[derive(lrp::Explainable)]
struct NoInputShape {
    #[lrp(4, 2)]
    fc: Linear,
}

fn main() {}
