fn main() {}

lrp::network! {
    TextNet(input = tokens) {
        embedding: Embedding(20, 8),
        lstm: LSTM(8, 12, bidirectional = true),
        fc: Linear(12, 5),
    }
}

lrp::network! {
    TextNet2(input = tokens) {
        embedding: Embedding(20, 8),
        lstm: GRU(6, 12),
        fc: Linear(12, 5),
    }
}
