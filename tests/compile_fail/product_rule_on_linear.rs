fn main() {}

lrp::network! {
    TextNet(input = tokens) {
        embedding: Embedding(20, 8),
        lstm: LSTM(8, 12, rule = Gamma(0.25)),
        fc: Linear(12, 5, rule = LrpAll),
    }
}
