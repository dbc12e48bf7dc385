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
    /// Max bytes of pixel buffers one animation may need while it is processed
    /// (`steps::animate::working_set`, from the header and the recipe's sizes), checked
    /// before its first frame is decoded. Default 1 GiB; docs/imaging.md has the sums.
    pub max_animation_bytes: u64,
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
            Some(at) if Instant::now() >= at => Err(Error::Timeout {
                elapsed_s: self.start.elapsed().as_secs_f64(),
                step: what.to_string(),
                limit_ms: self.timeout_ms,
            }),
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
            max_animation_bytes: 1 << 30,
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

/// `bytes` in whole MiB with thousands separators, rounded up: "3,840 MiB".
fn mebibytes(bytes: u64) -> String {
    let digits = bytes.div_ceil(1 << 20).to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    format!("{out} MiB")
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
                "animation has more than {} frames (the frame limit)",
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

    /// Checks the pixel buffers an animation needs (`needed` bytes) against
    /// `max_animation_bytes`.
    pub fn check_animation_bytes(&self, needed: u64) -> Result<()> {
        if needed > self.max_animation_bytes {
            return Err(Error::Limit(format!(
                "animation needs {} of frame buffers, over the {} limit",
                mebibytes(needed),
                mebibytes(self.max_animation_bytes)
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{mebibytes, Limits};

    #[test]
    fn mebibytes_are_rounded_up_and_grouped() {
        assert_eq!(mebibytes(0), "0 MiB");
        assert_eq!(mebibytes(1), "1 MiB");
        assert_eq!(mebibytes(1 << 30), "1,024 MiB");
        assert_eq!(mebibytes(3840 << 20), "3,840 MiB");
        assert_eq!(mebibytes(1_234_567 << 20), "1,234,567 MiB");
    }

    #[test]
    fn animation_budget_names_both_sizes() {
        let limits = Limits::default();
        assert!(limits.check_animation_bytes(1 << 30).is_ok());
        let err = limits.check_animation_bytes((1 << 30) + 1).unwrap_err();
        assert_eq!(
            err.to_string(),
            "animation needs 1,025 MiB of frame buffers, over the 1,024 MiB limit"
        );
    }
}
