//! Encode every (variant, format) pair, in plan order, in parallel.
//! WebP gets every frame (animated WebP for animations); AVIF and JPEG use the
//! first frame. No metadata (EXIF/XMP/ICC/GPS) is written by any encoder.

use rayon::prelude::*;

use crate::codecs;
use crate::errors::{Error, Result};
use crate::pipeline::{Context, OutFormat, Output, Step};

pub struct Encode;

impl Step for Encode {
    fn run(&self, ctx: &mut Context<'_>) -> Result<()> {
        let plan = ctx.plan;
        let loop_count = ctx.loop_count;
        let renditions = &ctx.renditions;
        let mut jobs: Vec<(&str, usize, OutFormat)> = Vec::new();
        for &(variant, rendition) in &ctx.targets {
            if let Some(v) = plan.variants.get(variant) {
                jobs.extend(v.formats.iter().map(|&f| (v.name.as_str(), rendition, f)));
            }
        }
        let outputs: Vec<Result<Output>> = jobs
            .par_iter()
            .map(|&(name, rendition, format)| {
                let r = renditions
                    .get(rendition)
                    .ok_or_else(|| Error::Encode { format: format.name(), detail: "missing rendition".into() })?;
                let (data, frames) = match format {
                    OutFormat::Webp => codecs::webp::encode(r, plan, loop_count)?,
                    OutFormat::Avif => (codecs::avif::encode(r, plan)?, 1),
                    OutFormat::Jpeg => (codecs::jpeg::encode(r, plan)?, 1),
                };
                Ok(Output { name: name.to_owned(), format, width: r.width, height: r.height, data, frames })
            })
            .collect();
        ctx.outputs = outputs.into_iter().collect::<Result<Vec<_>>>()?;
        Ok(())
    }
}
