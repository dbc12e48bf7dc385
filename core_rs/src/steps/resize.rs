//! Fit every variant box (keep aspect, never upscale, every side <= 16383 for
//! WebP), then resize each size from the next larger one with Lanczos3
//! (fast_image_resize, alpha-aware).

use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, Resizer};
use image::DynamicImage;

use crate::errors::{Error, Result};
use crate::pipeline::{Context, Frame, Rendition, Step};

/// WebP's hard limit per side, applied to every output.
pub const MAX_SIDE: u32 = 16_383;

pub struct Resize;

impl Step for Resize {
    fn run(&self, ctx: &mut Context<'_>) -> Result<()> {
        let (w, h) = ctx.upright;
        // distinct target sizes, largest first
        let mut sizes: Vec<(u32, u32)> = ctx
            .plan
            .variants
            .iter()
            .map(|v| fit(w, h, v.width, v.height))
            .collect();
        sizes.sort_by_key(|&(tw, th)| std::cmp::Reverse(u64::from(tw) * u64::from(th)));
        sizes.dedup();
        let mut renditions: Vec<Rendition> = Vec::with_capacity(sizes.len());
        for &(tw, th) in &sizes {
            // the smallest already-made rendition that still covers the target
            let source = renditions
                .iter()
                .filter(|r| r.width >= tw && r.height >= th)
                .min_by_key(|r| u64::from(r.width) * u64::from(r.height))
                .map(|r| r.frames.as_slice())
                .unwrap_or(ctx.frames.as_slice());
            let deadline = ctx.deadline;
            let frames = source
                .iter()
                .map(|f| {
                    deadline.check("resizing")?;
                    Ok(Frame {
                        image: resize(&f.image, tw, th)?,
                        delay_ms: f.delay_ms,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            renditions.push(Rendition {
                width: tw,
                height: th,
                frames,
            });
        }
        ctx.targets = ctx
            .plan
            .variants
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let size = fit(w, h, v.width, v.height);
                (i, sizes.iter().position(|&s| s == size).unwrap_or(0))
            })
            .collect();
        ctx.renditions = renditions;
        Ok(())
    }
}

/// Size that fits inside `bw` x `bh` keeping the aspect ratio; never larger than
/// the source and never over [`MAX_SIDE`]; at least 1x1.
pub fn fit(w: u32, h: u32, bw: u32, bh: u32) -> (u32, u32) {
    if w == 0 || h == 0 {
        return (1, 1);
    }
    let (wf, hf) = (f64::from(w), f64::from(h));
    let scale = (f64::from(bw.max(1)) / wf)
        .min(f64::from(bh.max(1)) / hf)
        .min(f64::from(MAX_SIDE) / wf)
        .min(f64::from(MAX_SIDE) / hf)
        .min(1.0);
    let side = |v: f64, max: u32| ((v * scale).round() as u32).clamp(1, max.min(MAX_SIDE));
    (side(wf, w), side(hf, h))
}

fn resize(src: &DynamicImage, tw: u32, th: u32) -> Result<DynamicImage> {
    if src.width() == tw && src.height() == th {
        return Ok(src.clone());
    }
    let mut dst = DynamicImage::new(tw, th, src.color());
    let options = ResizeOptions::new()
        .resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3))
        .use_alpha(true);
    Resizer::new()
        .resize(src, &mut dst, &options)
        .map_err(|e| Error::Encode {
            format: "resize",
            detail: e.to_string(),
        })?;
    Ok(dst)
}

#[cfg(test)]
mod tests {
    use super::fit;

    #[test]
    fn fits_boxes() {
        assert_eq!(fit(1932, 2576, 200, 200), (150, 200));
        assert_eq!(fit(20000, 300, 200, 200), (200, 3));
        assert_eq!(fit(290, 442, 2048, 2048), (290, 442));
        assert_eq!(fit(20000, 300, 100_000, 100_000), (16383, 246));
    }
}
