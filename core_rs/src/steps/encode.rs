//! Encode every (variant, format) pair, in plan order, in parallel.
//! WebP gets every frame (an animation's animated WebP was already written frame by
//! frame by `steps::animate`, and is taken from there); AVIF and JPEG use the
//! first frame. No metadata (EXIF/XMP/ICC/GPS) is written by any encoder.

use rayon::prelude::*;

use crate::codecs;
use crate::errors::{Error, Result};
use crate::pipeline::{AvifSettings, Context, OutFormat, Output, Step};

pub struct Encode;

impl Step for Encode {
    fn run(&self, ctx: &mut Context<'_>) -> Result<()> {
        let plan = ctx.plan;
        let loop_count = ctx.loop_count;
        let renditions = &ctx.renditions;
        let animations = &ctx.animations;
        let deadline = ctx.deadline;
        // (variant name, rendition, format) in plan order; identical
        // (rendition, format) pairs (small sources never upscaled) are encoded once.
        // An encode job is (rendition, format, AVIF quality bits, AVIF speed, AVIF rect
        // partitions); the AVIF settings are zero for other formats, so they never split a job.
        type Job = (usize, OutFormat, u32, u8, bool);
        let mut wanted: Vec<(&str, Job)> = Vec::new();
        for &(variant, rendition) in &ctx.targets {
            if let Some(v) = plan.variants.get(variant) {
                let a = v.avif_settings(plan);
                wanted.extend(v.formats.iter().map(|&f| {
                    let avif = if f == OutFormat::Avif {
                        (a.quality.to_bits(), a.speed, a.rect_partitions)
                    } else {
                        (0, 0, false)
                    };
                    (v.name.as_str(), (rendition, f, avif.0, avif.1, avif.2))
                }));
            }
        }
        let mut jobs: Vec<Job> = wanted.iter().map(|&(_, job)| job).collect();
        jobs.sort_by_key(|&(r, f, q, s, rect)| (r, f as u8, q, s, rect));
        jobs.dedup();
        let encoded: Vec<Result<(Vec<u8>, u32)>> = jobs
            .par_iter()
            .map(
                |&(rendition, format, quality_bits, speed, rect_partitions)| {
                    deadline.check("encoding")?;
                    let r = renditions.get(rendition).ok_or_else(|| Error::Encode {
                        format: format.name(),
                        detail: "missing rendition".into(),
                    })?;
                    let animation = animations.get(rendition).and_then(Option::as_ref);
                    match format {
                        OutFormat::Webp => match animation {
                            Some((data, frames)) => Ok((data.clone(), *frames)),
                            None => codecs::webp::encode(r, plan, loop_count, deadline),
                        },
                        OutFormat::Avif => Ok((
                            codecs::avif::encode(
                                r,
                                AvifSettings {
                                    quality: f32::from_bits(quality_bits),
                                    speed,
                                    rect_partitions,
                                },
                            )?,
                            1,
                        )),
                        OutFormat::Jpeg => Ok((codecs::jpeg::encode(r, plan)?, 1)),
                    }
                },
            )
            .collect();
        let encoded = encoded.into_iter().collect::<Result<Vec<_>>>()?;
        for (name, job) in wanted {
            let (rendition, format, ..) = job;
            let (Some(i), Some(r)) = (
                jobs.iter().position(|&j| j == job),
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
