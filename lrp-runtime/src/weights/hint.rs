//! Hints that turn a missing tensor or a wrong shape into the likely fix: a prefix the file's
//! names carry (`module.` from `nn.DataParallel`), a layer left out or added (every later index
//! shifted), a PyTorch checkpoint given instead of safetensors.

use std::cmp::Reverse;
use std::ops::Bound;

use super::Weights;
use crate::error::Error;

/// Index shifts tried around a numeric name segment, nearest first.
const SHIFTS: [isize; 6] = [1, -1, 2, -2, 3, -3];
/// Names ending in a missing one that [`Weights::prefix_hint`] weighs.
const PREFIX_CANDIDATES: usize = 16;
/// How far [`Weights::prefix_hint`] counts the names sharing a prefix.
const PREFIX_COUNT: usize = 1000;

impl Weights {
    /// The error for tensor `name` of `layer`, absent from the file: with a hint when the file
    /// has it under a prefix or under a shifted index with the `expected` shape.
    pub(super) fn missing(&self, name: &str, layer: &str, expected: &[usize]) -> Error {
        let hint = self.prefix_hint(name).or_else(|| self.shift_hint(name, expected));
        match hint {
            Some(hint) => Error::MissingTensorHint { name: name.to_string(), layer: layer.to_string(), hint },
            None => Error::MissingTensor { name: name.to_string(), layer: layer.to_string() },
        }
    }

    /// The error for tensor `name` of shape `found` where the network expects `expected`: with a
    /// hint when a shifted index holds the `expected` shape.
    pub(super) fn mismatch(&self, name: &str, expected: &[usize], found: &[usize]) -> Error {
        let (name, expected, found) = (name.to_string(), expected.to_vec(), found.to_vec());
        match self.shift_hint(&name, &expected) {
            Some(hint) => Error::ShapeMismatchHint { name, expected, found, hint },
            None => Error::ShapeMismatch { name, expected, found },
        }
    }

    /// `<prefix><name>` in the file, for a prefix ending in `.`: among the first
    /// [`PREFIX_CANDIDATES`], the prefix most names share (counted up to [`PREFIX_COUNT`]; the
    /// shortest among equals), as a hint naming the way to strip it. Bounded work however many
    /// tensors a hostile file declares.
    fn prefix_hint(&self, name: &str) -> Option<String> {
        let shared = |prefix: &str| {
            let after = (Bound::Included(prefix), Bound::Unbounded);
            self.tensors.range::<str, _>(after).take_while(|(n, _)| n.starts_with(prefix)).take(PREFIX_COUNT).count()
        };
        let (full, prefix) = self
            .tensors
            .keys()
            .filter_map(|full| Some((full, full.strip_suffix(name)?)))
            .filter(|(_, prefix)| prefix.ends_with('.'))
            .take(PREFIX_CANDIDATES)
            .max_by_key(|&(_, prefix)| (shared(prefix), Reverse(prefix.len())))?;
        let wrapper = if prefix == "module." { " (as `nn.DataParallel` does)" } else { "" };
        Some(format!(
            "the file has `{full}`: it was saved with the prefix `{prefix}`{wrapper}; load with \
             `LoadOptions::default().strip_prefix(\"{prefix}\")` or `Weights::strip_prefix(\"{prefix}\")`"
        ))
    }

    /// A name like `name` with one numeric segment shifted by 1 to 3 whose tensor has the
    /// `expected` shape, as a hint that the spec leaves out or adds layers before that index.
    fn shift_hint(&self, name: &str, expected: &[usize]) -> Option<String> {
        let segments: Vec<&str> = name.split('.').collect();
        for (i, segment) in segments.iter().enumerate() {
            let Ok(index) = segment.parse::<usize>() else { continue };
            if segment.len() > 1 && segment.starts_with('0') {
                continue; // `07` is no index
            }
            for shift in SHIFTS {
                let Some(moved) = index.checked_add_signed(shift) else { continue };
                let mut candidate = segments.clone();
                let moved = moved.to_string();
                candidate[i] = &moved;
                let candidate = candidate.join(".");
                if self.tensors.get(&candidate).is_some_and(|t| t.shape() == expected) {
                    let before = segments[..=i].join(".");
                    let (verb, n) = if shift > 0 { ("leave out", shift) } else { ("add", -shift) };
                    let layers = if n == 1 { "a layer".to_string() } else { format!("{n} layers") };
                    return Some(format!(
                        "`{candidate}` has the expected shape {expected:?}: does the spec {verb} {layers} \
                         before `{before}`?"
                    ));
                }
            }
        }
        None
    }
}

/// What kind of PyTorch checkpoint a file starting with `head` is, if it is one: `torch.save`
/// writes a zip archive (`PK\x03\x04`), older versions a pickle (`\x80`, protocol 2 to 5).
pub(super) fn torch_checkpoint(head: &[u8]) -> Option<&'static str> {
    match head {
        [b'P', b'K', 3, 4, ..] => Some("zip"),
        [0x80, 2..=5, ..] => Some("pickle"),
        _ => None,
    }
}

/// The message for a PyTorch checkpoint of `kind` given as safetensors.
pub(super) fn torch_message(kind: &str) -> String {
    format!(
        "it is a PyTorch {kind} checkpoint (written by `torch.save`), not safetensors; save the weights \
         with `safetensors.torch.save_file(model.state_dict(), \"weights.safetensors\")`"
    )
}
