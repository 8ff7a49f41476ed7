//! The traits of generated GPU models, so that code can be generic over them (as over
//! [`crate::TensorModel`] on the CPU).

use std::sync::Arc;

use super::{Device, DeviceBuffer};
use crate::{Explanation, Result, Target};

/// A model of fixed-size inputs on a device (`NetGpu`, made by [`ToGpu::to_gpu`]): batches of
/// `n` samples back to back, results copied back into the workspace.
pub trait GpuTensorModel {
    /// The device buffers of one call, and the host copies of its results.
    type Workspace;
    /// Elements of one sample.
    const INPUT_LEN: usize;
    /// Number of outputs (classes).
    const CLASSES: usize;

    /// The device the model lives on.
    fn device(&self) -> &Device;

    /// Device buffers for up to `capacity` samples per call; no call allocates after this.
    fn workspace(&self, capacity: usize) -> Result<Self::Workspace>;

    /// Class scores of `n` samples, `[n, CLASSES]`.
    fn predict_batch<'w>(&self, ws: &'w mut Self::Workspace, input: &[f32], n: usize) -> Result<&'w [f32]>;

    /// The LRP relevance of every input feature of `n` samples for the score of `target`.
    fn explain_batch<'w>(
        &self,
        ws: &'w mut Self::Workspace,
        input: &[f32],
        n: usize,
        target: Target,
    ) -> Result<Explanation<'w>>;

    /// Propagates a given output relevance (`[n, CLASSES]`) back to the input.
    fn explain_from_batch<'w>(
        &self,
        ws: &'w mut Self::Workspace,
        input: &[f32],
        n: usize,
        output_relevance: &[f32],
    ) -> Result<Explanation<'w>>;

    /// Gradient x input of `n` samples.
    fn gradient_x_input_batch<'w>(
        &self,
        ws: &'w mut Self::Workspace,
        input: &[f32],
        n: usize,
        target: Target,
    ) -> Result<Explanation<'w>>;
}

/// A CPU model that uploads itself to a device.
pub trait ToGpu {
    /// Its GPU model.
    type Gpu: GpuTensorModel;

    /// Uploads the model (its weights, BatchNorm folds and every rule's transformed parameters,
    /// as prepared for the CPU) to `device`.
    fn to_gpu(&self, device: &Arc<Device>) -> Result<Self::Gpu>;
}

/// An explanation whose relevance stays on the device (for pipelines): the `*_on_device`
/// methods of a GPU model. The logits and targets are on the host (the targets are chosen from
/// the logits there); the relevance lies from the buffer's start, laid out as
/// [`crate::Explanation::relevance`] (`[batch, input...]`; a sequence's, `[length, step]` of
/// each sample back to back, `lengths` giving them), and was checked finite on the device.
#[derive(Debug)]
pub struct DeviceExplanation<'w> {
    pub logits: &'w [f32],
    pub targets: &'w [usize],
    pub relevance: &'w DeviceBuffer,
    pub batch: usize,
    pub lengths: &'w [usize],
}
