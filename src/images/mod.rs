//! Images beyond the score network: a noise-conditional classifier trained by tweedie
//! (`run`: its settings, checkpoint and reading under the process; `train`: its training loop
//! and test accuracy), the sample-quality numbers it gives (`quality`: class accuracy and the
//! Fréchet distance in its feature space, with `frechet`'s matrix square roots), and classifier
//! guidance of any score model (`guidance`). The network itself is the U-Net's down path
//! (`nn::unet::classifier`).

pub mod frechet;
pub mod guidance;
pub mod quality;
pub mod run;
pub mod train;

pub use guidance::ClassifierGuided;
pub use run::{ClassifierConfig, ClassifierTraining, NoisyClassifier};

#[cfg(test)]
mod tests;
