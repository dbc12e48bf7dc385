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
        let deadline = ctx.deadline;
        // (variant name, rendition, format) in plan order; identical
        // (rendition, format) pairs (small sources never upscaled) are encoded once.
        let mut wanted: Vec<(&str, usize, OutFormat)> = Vec::new();
        for &(variant, rendition) in &ctx.targets {
            if let Some(v) = plan.variants.get(variant) {
                wanted.extend(v.formats.iter().map(|&f| (v.name.as_str(), rendition, f)));
            }
        }
        let mut jobs: Vec<(usize, OutFormat)> = wanted.iter().map(|&(_, r, f)| (r, f)).collect();
        jobs.sort_by_key(|&(r, f)| (r, f as u8));
        jobs.dedup();
        let encoded: Vec<Result<(Vec<u8>, u32)>> = jobs
            .par_iter()
            .map(|&(rendition, format)| {
                deadline.check("encoding")?;
                let r = renditions.get(rendition).ok_or_else(|| Error::Encode {
                    format: format.name(),
                    detail: "missing rendition".into(),
                })?;
                match format {
                    OutFormat::Webp => codecs::webp::encode(r, plan, loop_count),
                    OutFormat::Avif => Ok((codecs::avif::encode(r, plan)?, 1)),
                    OutFormat::Jpeg => Ok((codecs::jpeg::encode(r, plan)?, 1)),
                }
            })
            .collect();
        let encoded = encoded.into_iter().collect::<Result<Vec<_>>>()?;
        for (name, rendition, format) in wanted {
            let (Some(i), Some(r)) = (
                jobs.iter().position(|&j| j == (rendition, format)),
                renditions.get(rendition),
            ) else {
                continue;
            };
            let Some((data, frames)) = encoded.get(i) else {
                continue;
            };
            ctx.outputs.push(Output {
                name: name.to_owned(),
                format,
                width: r.width,
                height: r.height,
                data: data.clone(),
                frames: *frames,
            });
        }
        Ok(())
    }
}
