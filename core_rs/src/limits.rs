//! Decompression-bomb defence: every size is checked against these limits from the
//! header, before any pixel buffer is allocated.

use std::time::{Duration, Instant};

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
    /// Max scans (SOS segments) of one JPEG; each progressive scan is a pass over
    /// the whole image, so thousands of them are a CPU bomb. libjpeg-turbo's
    /// `djpeg -maxscans` / TurboJPEG `TJPARAM_SCANLIMIT` exist for the same reason.
    /// Default 100: zune-jpeg's own limit, which it only hits after decoding 100 scans.
    pub max_scans: u64,
    /// Wall-clock time limit of one `process()` call in ms (0 = none).
    pub timeout_ms: u64,
}

/// The point in time a `process()` call must finish by, checked between the
/// pipeline steps and inside their long loops (per frame, per encode job).
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    start: Instant,
    at: Option<Instant>,
    timeout_ms: u64,
}

impl Deadline {
    pub fn new(timeout_ms: u64) -> Self {
        let start = Instant::now();
        let at = (timeout_ms > 0).then(|| start + Duration::from_millis(timeout_ms));
        Deadline {
            start,
            at,
            timeout_ms,
        }
    }

    /// `Err(Error::Timeout)` once the deadline has passed; `what` names the
    /// step that noticed it.
    pub fn check(&self, what: &str) -> Result<()> {
        match self.at {
            Some(at) if Instant::now() >= at => Err(Error::Timeout(format!(
                "processing stopped after {:.1} s during {what}: over the {} ms time limit",
                self.start.elapsed().as_secs_f64(),
                self.timeout_ms
            ))),
            _ => Ok(()),
        }
    }
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
            max_scans: 100,
            timeout_ms: 30_000,
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
