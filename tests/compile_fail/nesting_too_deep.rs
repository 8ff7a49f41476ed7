// Blocks nested one level deeper than the compiler allows (32): an error at the innermost group.
lrp::network! {
    Net(input = [4]) {
        b: {
            b: {
                b: {
                    b: {
                        b: {
                            b: {
                                b: {
                                    b: {
                                        b: {
                                            b: {
                                                b: {
                                                    b: {
                                                        b: {
                                                            b: {
                                                                b: {
                                                                    b: {
                                                                        b: {
                                                                            b: {
                                                                                b: {
                                                                                    b: {
                                                                                        b: {
                                                                                            b: {
                                                                                                b: {
                                                                                                    b: {
                                                                                                        b: {
                                                                                                            b: {
                                                                                                                b: {
                                                                                                                    b: {
                                                                                                                        b: {
                                                                                                                            b: {
                                                                                                                                b: {
                                                                                                                                    Linear(4, 2),
                                                                                                                                },
                                                                                                                            },
                                                                                                                        },
                                                                                                                    },
                                                                                                                },
                                                                                                            },
                                                                                                        },
                                                                                                    },
                                                                                                },
                                                                                            },
                                                                                        },
                                                                                    },
                                                                                },
                                                                            },
                                                                        },
                                                                    },
                                                                },
                                                            },
                                                        },
                                                    },
                                                },
                                            },
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    }
}

fn main() {}
