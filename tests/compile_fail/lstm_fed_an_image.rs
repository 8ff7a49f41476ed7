fn main() {}

lrp::network! {
    ImageLstm(input = [3, 8, 8]) {
        conv: Conv2d(3, 4, kernel_size = 3),
        lstm: LSTM(4, 12),
        fc: Linear(12, 5),
    }
}
