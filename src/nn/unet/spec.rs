//! The U-Net's sizes (the `unet` fields of the `[model]` table): a preset (`tiny`, `base`) whose
//! channel width, per-level multipliers, residual blocks per level and attention resolutions any
//! explicit field overrides, and the number of classes; checked against the event [c, h, w].

use crate::nn::Arch;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// A U-Net size.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum UnetPreset {
    /// 32 channels, multipliers [1, 2, 2] (28 → 14 → 7 on MNIST), 1 block per level, attention
    /// at the lowest resolution: about 0.8M parameters, trainable on two CPU cores.
    #[default]
    Tiny,
    /// 64 channels, multipliers [1, 2, 2], 2 blocks per level, attention at the lowest
    /// resolution (a GPU's size).
    Base,
}

/// The resolved sizes of a U-Net.
#[derive(Clone, Debug, PartialEq)]
pub struct UnetSpec {
    /// Base channel width C; level l has C·mults\[l\] channels, the embedding 4C features.
    pub channels: usize,
    pub mults: Vec<usize>,
    /// Residual blocks per level (down and up).
    pub blocks: usize,
    /// The resolutions (heights) with self-attention after each residual block.
    pub attention: Vec<usize>,
    /// Classes of the condition; class embedding rows = classes + 1, the last the null class.
    pub classes: usize,
}

impl UnetSpec {
    /// The sizes `arch` gives for images of shape `event` [c, h, w]: its preset overridden by its
    /// explicit fields, attention at the lowest resolution unless listed; checked.
    pub fn of(arch: &Arch, event: &[usize]) -> Result<Self> {
        let (channels, mults, blocks) = match arch.preset.unwrap_or_default() {
            UnetPreset::Tiny => (32, vec![1, 2, 2], 1),
            UnetPreset::Base => (64, vec![1, 2, 2], 2),
        };
        let mults = arch.mults.clone().unwrap_or(mults);
        let [_, h, w] = event[..] else {
            bail!(
                "network = \"unet\" needs images: an event shape [c, h, w], not {event:?} \
                 (train on an image source such as data.source = \"mnist\")"
            );
        };
        if mults.is_empty() || mults.contains(&0) {
            bail!("model.mults must list at least one positive multiplier, got {mults:?}");
        }
        let scale = 1usize
            .checked_shl(mults.len() as u32 - 1)
            .filter(|&s| s <= h)
            .unwrap_or(0);
        if scale == 0 || h % scale != 0 || w % scale != 0 {
            bail!(
                "a U-Net of {} levels halves the image {} times: its size {h}×{w} must be \
                 divisible by 2^{}",
                mults.len(),
                mults.len() - 1,
                mults.len() - 1
            );
        }
        let lowest = h / scale;
        let attention = arch.attention.clone().unwrap_or_else(|| vec![lowest]);
        let levels: Vec<usize> = (0..mults.len()).map(|l| h >> l).collect();
        if let Some(r) = attention.iter().find(|r| !levels.contains(r)) {
            bail!("model.attention lists resolution {r}, but the U-Net's levels are {levels:?}");
        }
        let spec = UnetSpec {
            channels: arch.channels.unwrap_or(channels),
            mults,
            blocks: arch.blocks.unwrap_or(blocks),
            attention,
            classes: arch.classes.unwrap_or(0),
        };
        if spec.channels == 0 || spec.blocks == 0 {
            bail!("model.channels and model.blocks must be positive");
        }
        Ok(spec)
    }
}
