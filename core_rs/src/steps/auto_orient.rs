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
        ctx.upright = ctx
            .frames
            .first()
            .map(|f| (f.image.width(), f.image.height()))
            .unwrap_or((0, 0));
        Ok(())
    }
}
