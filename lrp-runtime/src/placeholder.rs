//! Stand-ins for a model whose spec failed to compile, so that one mistake in a spec gives one
//! error. Next to its `compile_error!`, `network!` emits `struct Net;` and
//! `#[derive(Explainable)]` keeps the user's struct; both then invoke [`__lrp_stand_in!`], which
//! gives the type every constant and method of a generated model, each accepting any arguments,
//! and implements `Model` and `TensorModel` or `TokenModel` for it, so that the code using the
//! model type-checks without follow-on errors. Nothing here can run:
//! the crate that contains a stand-in does not compile.

/// The workspace of a stand-in model (`NetWorkspace` is an alias of it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Workspace;

impl Workspace {
    /// How many samples one call may hold.
    pub fn capacity(&self) -> usize {
        ::core::unreachable!("a stand-in for a model that failed to compile")
    }

    /// Token models: the longest sequence.
    pub fn max_len(&self) -> usize {
        ::core::unreachable!("a stand-in for a model that failed to compile")
    }
}

/// `__lrp_stand_in!(Net, features)` or `__lrp_stand_in!(Net, tokens)`: an `impl Net` with the
/// constants and methods of a generated model of fixed-size inputs or of token sequences. Where
/// the two kinds differ in arity (`workspace`, the `_batch` variants, `occlusion`), the kind
/// decides; every argument but the workspace is generic, and the bodies are unreachable.
#[doc(hidden)]
#[macro_export]
macro_rules! __lrp_stand_in {
    ($model:ident, $kind:ident) => {
        #[allow(dead_code, unused_variables, clippy::all)]
        impl $model {
            pub const INPUT_SHAPE: &'static [usize] = &[1];
            pub const INPUT_LEN: usize = 1;
            pub const CLASSES: usize = 1;
            pub const VOCAB: usize = 1;
            pub const EMBEDDING_DIM: usize = 1;
            pub const NAME: &'static str = ::core::stringify!($model);
            pub const TENSORS: &'static [(&'static str, &'static [usize])] = &[];
            $crate::__lrp_stand_in!(@fns Self, [load(path), load_strict(path), from_bytes(bytes)]);
            $crate::__lrp_stand_in!(@fns Self, [load_with(path, options)]);
            pub fn from_weights(weights: &mut $crate::Weights, strict: bool) -> $crate::Result<Self> {
                ::core::unreachable!("a stand-in for a model that failed to compile")
            }
            $crate::__lrp_stand_in!(@methods $kind);
        }
        $crate::__lrp_stand_in!(@traits $model, $kind);
    };
    // `Model` and `TensorModel` or `TokenModel`, for code generic over models.
    (@traits $model:ident, features) => {
        #[allow(unused_variables)]
        impl $crate::Model for $model {
            type Input = [f32];
            $crate::__lrp_stand_in!(@model $model);
        }
        #[allow(unused_variables)]
        impl $crate::TensorModel for $model {
            const INPUT_SHAPE: &'static [usize] = &[1];
            const INPUT_LEN: usize = 1;
            fn predict_batch<'w>(&self, ws: &'w mut Self::Workspace, input: &[f32], n: usize) -> $crate::Result<&'w [f32]> {
                ::core::unreachable!("a stand-in for a model that failed to compile")
            }
            fn explain_batch<'w>(
                &self,
                ws: &'w mut Self::Workspace,
                input: &[f32],
                n: usize,
                target: impl ::core::convert::Into<$crate::Target>,
            ) -> $crate::Result<$crate::Explanation<'w>> {
                ::core::unreachable!("a stand-in for a model that failed to compile")
            }
        }
    };
    (@traits $model:ident, tokens) => {
        #[allow(unused_variables)]
        impl $crate::Model for $model {
            type Input = [usize];
            $crate::__lrp_stand_in!(@model $model);
        }
        #[allow(unused_variables)]
        impl $crate::TokenModel for $model {
            const VOCAB: usize = 1;
            const EMBEDDING_DIM: usize = 1;
            fn predict_batch<'w>(&self, ws: &'w mut Self::Workspace, sequences: &[&[usize]]) -> $crate::Result<&'w [f32]> {
                ::core::unreachable!("a stand-in for a model that failed to compile")
            }
            fn explain_batch<'w>(
                &self,
                ws: &'w mut Self::Workspace,
                sequences: &[&[usize]],
                target: impl ::core::convert::Into<$crate::Target>,
            ) -> $crate::Result<$crate::Explanation<'w>> {
                ::core::unreachable!("a stand-in for a model that failed to compile")
            }
        }
    };
    // The items of `Model` that do not depend on the kind of input.
    (@model $model:ident) => {
        type Workspace = $crate::placeholder::Workspace;
        const NAME: &'static str = ::core::stringify!($model);
        const CLASSES: usize = 1;
        const TENSORS: &'static [(&'static str, &'static [usize])] = &[];
        fn from_weights(weights: &mut $crate::Weights, strict: bool) -> $crate::Result<Self> {
            ::core::unreachable!("a stand-in for a model that failed to compile")
        }
        fn workspace_for(&self, capacity: $crate::Capacity) -> $crate::Result<Self::Workspace> {
            ::core::unreachable!("a stand-in for a model that failed to compile")
        }
        fn predict<'w>(&self, ws: &'w mut Self::Workspace, input: &Self::Input) -> $crate::Result<&'w [f32]> {
            ::core::unreachable!("a stand-in for a model that failed to compile")
        }
        fn explain<'w>(
            &self,
            ws: &'w mut Self::Workspace,
            input: &Self::Input,
            target: impl ::core::convert::Into<$crate::Target>,
        ) -> $crate::Result<$crate::Explanation<'w>> {
            ::core::unreachable!("a stand-in for a model that failed to compile")
        }
        fn explain_from<'w>(
            &self,
            ws: &'w mut Self::Workspace,
            input: &Self::Input,
            output_relevance: &[f32],
        ) -> $crate::Result<$crate::Explanation<'w>> {
            ::core::unreachable!("a stand-in for a model that failed to compile")
        }
        fn gradient_x_input<'w>(
            &self,
            ws: &'w mut Self::Workspace,
            input: &Self::Input,
            target: impl ::core::convert::Into<$crate::Target>,
        ) -> $crate::Result<$crate::Explanation<'w>> {
            ::core::unreachable!("a stand-in for a model that failed to compile")
        }
    };
    (@methods features) => {
        $crate::__lrp_stand_in!(@workspace capacity);
        $crate::__lrp_stand_in!(@method &'static [f32], [predict(input), predict_batch(input, n)]);
        $crate::__lrp_stand_in!(@method $crate::Explanation<'static>, [
            explain(input, target), explain_batch(input, n, target),
            explain_from(input, rel), explain_from_batch(input, n, rel),
            gradient_x_input(input, target), gradient_x_input_batch(input, n, target),
            occlusion(input, target, window), occlusion_batch(input, n, target, window)
        ]);
    };
    (@methods tokens) => {
        $crate::__lrp_stand_in!(@workspace max_len, batch);
        $crate::__lrp_stand_in!(@method &'static [f32], [predict(tokens), predict_batch(sequences)]);
        $crate::__lrp_stand_in!(@method $crate::Explanation<'static>, [
            explain(tokens, target), explain_batch(sequences, target),
            explain_from(tokens, rel), explain_from_batch(sequences, rel),
            gradient_x_input(tokens, target), gradient_x_input_batch(sequences, target),
            occlusion(tokens, target), occlusion_batch(sequences, target)
        ]);
    };
    (@workspace $($arg:ident),*) => {
        #[allow(non_camel_case_types)]
        pub fn workspace<$($arg),*>(&self, $($arg: $arg),*) -> $crate::Result<$crate::placeholder::Workspace> {
            ::core::unreachable!("a stand-in for a model that failed to compile")
        }
    };
    // Associated functions returning `Result<Self>`, one generic parameter per argument.
    (@fns $ret:ty, [$($name:ident($($arg:ident),*)),*]) => {
        $(
            #[allow(non_camel_case_types)]
            pub fn $name<$($arg),*>($($arg: $arg),*) -> $crate::Result<$ret> {
                ::core::unreachable!("a stand-in for a model that failed to compile")
            }
        )*
    };
    // Methods on `&self` and a workspace (a concrete `&mut`, so that passing one reborrows it),
    // returning `Result<$ret>`.
    (@method $ret:ty, [$($name:ident($($arg:ident),*)),*]) => {
        $(
            #[allow(non_camel_case_types)]
            pub fn $name<$($arg),*>(&self, ws: &mut $crate::placeholder::Workspace, $($arg: $arg),*) -> $crate::Result<$ret> {
                ::core::unreachable!("a stand-in for a model that failed to compile")
            }
        )*
    };
}
