//! Fit every variant box (keep aspect, never upscale, every side <= 16383 for
//! WebP), then resize each size from the next larger one with Lanczos3
//! (fast_image_resize, alpha-aware).

use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, Resizer};
use image::DynamicImage;

use crate::errors::{Error, Result};
use crate::limits::Deadline;
use crate::pipeline::{Context, Frame, Plan, Rendition, Step};

/// WebP's hard limit per side, applied to every output.
pub const MAX_SIDE: u32 = 16_383;

pub struct Resize;

impl Step for Resize {
    fn run(&self, ctx: &mut Context<'_>) -> Result<()> {
        let (sizes, targets) = plan_sizes(ctx.plan, ctx.upright);
        let mut renditions: Vec<Rendition> = sizes
            .iter()
            .map(|&(width, height)| Rendition {
                width,
                height,
                frames: Vec::with_capacity(ctx.frames.len()),
            })
            .collect();
        for frame in &ctx.frames {
            let images = resize_chain(&frame.image, &sizes, ctx.deadline)?;
            for (r, image) in renditions.iter_mut().zip(images) {
                r.frames.push(Frame {
                    image,
                    delay_ms: frame.delay_ms,
                });
            }
        }
        ctx.targets = targets;
        ctx.renditions = renditions;
        Ok(())
    }
}

/// The distinct rendition sizes of `plan` for a source of `upright` size, largest
/// first, and for every variant in plan order (variant index, index into those sizes).
pub fn plan_sizes(plan: &Plan, upright: (u32, u32)) -> (Vec<(u32, u32)>, Vec<(usize, usize)>) {
    let (w, h) = upright;
    let mut sizes: Vec<(u32, u32)> = plan
        .variants
        .iter()
        .map(|v| fit(w, h, v.width, v.height))
        .collect();
    sizes.sort_by_key(|&(tw, th)| std::cmp::Reverse(u64::from(tw) * u64::from(th)));
    sizes.dedup();
    let targets = plan
        .variants
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let size = fit(w, h, v.width, v.height);
            (i, sizes.iter().position(|&s| s == size).unwrap_or(0))
        })
        .collect();
    (sizes, targets)
}

/// `image` resized to every one of `sizes` (largest first, as [`plan_sizes`] gives
/// them), each from the smallest already-made size that still covers it, or from
/// `image` itself. The deadline is checked before each resize.
pub fn resize_chain(
    image: &DynamicImage,
    sizes: &[(u32, u32)],
    deadline: Deadline,
) -> Result<Vec<DynamicImage>> {
    let mut made: Vec<DynamicImage> = Vec::with_capacity(sizes.len());
    for &(tw, th) in sizes {
        let source = made
            .iter()
            .filter(|r| r.width() >= tw && r.height() >= th)
            .min_by_key(|r| u64::from(r.width()) * u64::from(r.height()))
            .unwrap_or(image);
        deadline.check("resizing")?;
        let resized = resize(source, tw, th)?;
        made.push(resized);
    }
    Ok(made)
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
