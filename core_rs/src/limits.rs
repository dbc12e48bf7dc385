//! Decompression-bomb defence: every size is checked against these limits from the
//! header, before any pixel buffer is allocated.

use crate::errors::{Error, Result};

/// Limits passed in from Python (`pixelfox.imaging.Limits`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Max pixels of one frame/canvas (width * height).
    pub max_pixels: u64,
    pub max_width: u64,
    pub max_height: u64,
    pub max_frames: u64,
    /// Max summed area of all frames.
    pub max_total_pixels: u64,
    pub max_input_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_pixels: 100_000_000,
            max_width: 65_535,
            max_height: 65_535,
            max_frames: 1_000,
            max_total_pixels: 2_000_000_000,
            max_input_bytes: 100 * 1024 * 1024,
        }
    }
}

fn megapixels(px: u64) -> String {
    if px.is_multiple_of(1_000_000) {
        format!("{} MP", px / 1_000_000)
    } else {
        format!("{:.1} MP", px as f64 / 1e6)
    }
}

impl Limits {
    pub fn check_input_len(&self, len: usize) -> Result<()> {
        if len as u64 > self.max_input_bytes {
            return Err(Error::Limit(format!(
                "input of {len} bytes exceeds the size limit ({} bytes)",
                self.max_input_bytes
            )));
        }
        Ok(())
    }

    /// Checks one canvas/frame size.
    pub fn check_dimensions(&self, width: u64, height: u64) -> Result<()> {
        let pixels = width.saturating_mul(height);
        if pixels > self.max_pixels {
            return Err(Error::Limit(format!(
                "image {width}x{height} exceeds the pixel limit ({})",
                megapixels(self.max_pixels)
            )));
        }
        if width > self.max_width || height > self.max_height {
            return Err(Error::Limit(format!(
                "image {width}x{height} exceeds the dimension limit ({}x{})",
                self.max_width, self.max_height
            )));
        }
        Ok(())
    }

    /// Checks the frame count and the summed area of all frames.
    pub fn check_frames(&self, frames: u64, total_pixels: u64) -> Result<()> {
        if frames > self.max_frames {
            return Err(Error::Limit(format!(
                "animation has {frames} frames, over the frame limit ({})",
                self.max_frames
            )));
        }
        if total_pixels > self.max_total_pixels {
            return Err(Error::Limit(format!(
                "animation has {} in total, over the limit ({})",
                megapixels(total_pixels),
                megapixels(self.max_total_pixels)
            )));
        }
        Ok(())
    }
}
