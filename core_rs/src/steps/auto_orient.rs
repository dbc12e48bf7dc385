//! Apply the EXIF orientation (all 8 values) so every output is upright.

use image::metadata::Orientation;

use crate::errors::Result;
use crate::pipeline::{Context, Step};

pub struct AutoOrient;

impl Step for AutoOrient {
    fn run(&self, ctx: &mut Context<'_>) -> Result<()> {
        if let Some(orientation) = Orientation::from_exif(ctx.info.orientation) {
            if orientation != Orientation::NoTransforms {
                for frame in &mut ctx.frames {
                    frame.image.apply_orientation(orientation);
                }
            }
        }
        ctx.upright = if ctx.shrink > 1 {
            // the frames are a DCT-scaled decode: the full size is the header's
            upright_size(ctx.info.width, ctx.info.height, ctx.info.orientation)
        } else {
            ctx.frames
                .first()
                .map(|f| (f.image.width(), f.image.height()))
                .unwrap_or((0, 0))
        };
        Ok(())
    }
}

/// Whether EXIF `orientation` turns the image a quarter (5..=8: width and height swap).
pub fn swaps_axes(orientation: u8) -> bool {
    matches!(orientation, 5..=8)
}

/// Size in px after applying EXIF `orientation` to a `width` x `height` image.
pub fn upright_size(width: u32, height: u32, orientation: u8) -> (u32, u32) {
    if swaps_axes(orientation) {
        (height, width)
    } else {
        (width, height)
    }
}
