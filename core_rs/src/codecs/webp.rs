//! WebP: RIFF chunk walk for the canvas size (VP8 / VP8L / VP8X), ANMF frame count
//! and EXIF orientation; in `Whole` mode the RIFF length must fit in the file.

use super::{le16, le24, le32, Mode};
use crate::errors::{Error, Result};
use crate::exif;
use crate::limits::{Deadline, Limits};
use crate::pipeline::{Plan, Rendition};
use crate::probe::{Format, Info};
use image::DynamicImage;
use libwebp_sys as sys;

pub fn parse(d: &[u8], limits: &Limits, mode: Mode) -> Result<Info> {
    let Some(riff_len) = le32(d, 4) else {
        return Err(Error::truncated("WebP data ends before the RIFF header"));
    };
    let riff_end = (riff_len as usize).saturating_add(8);
    if mode == Mode::Whole && d.len() < riff_end {
        return Err(Error::truncated(format!(
            "WebP RIFF declares {riff_end} bytes, file has {}",
            d.len()
        )));
    }
    let end = riff_end.min(d.len());
    let mut size: Option<(u32, u32)> = None;
    let mut frames: u32 = 0;
    let mut orientation = 1;
    let mut pos = 12;
    while pos + 8 <= end {
        let kind = &d[pos..pos + 4];
        let len = le32(d, pos + 4).unwrap_or(0) as usize;
        let body_start = pos + 8;
        let body_end = body_start.saturating_add(len);
        if mode == Mode::Whole && body_end > end {
            return Err(Error::truncated("WebP chunk runs past the end of the file"));
        }
        let body = &d[body_start..body_end.min(end)];
        match kind {
            b"VP8X" => {
                let (Some(w), Some(h)) = (le24(body, 4), le24(body, 7)) else {
                    return Err(Error::truncated("WebP data ends inside the VP8X header"));
                };
                size = Some((w + 1, h + 1));
                check(size, limits)?;
            }
            b"VP8 " | b"VP8L" if size.is_none() => {
                size = Some(bitstream_size(kind, body)?);
                check(size, limits)?;
            }
            b"ANMF" => {
                frames += 1;
                limits.check_frames(u64::from(frames), 0)?;
                if mode == Mode::Whole {
                    check_frame(body)?;
                }
            }
            b"EXIF" => orientation = exif::orientation(body),
            _ => {}
        }
        pos = body_end.saturating_add(len & 1);
    }
    let Some((width, height)) = size else {
        return Err(Error::truncated("WebP data ends before the image header"));
    };
    if width == 0 || height == 0 {
        return Err(Error::corrupt("corrupt WebP: zero width or height"));
    }
    Ok(Info {
        format: Format::Webp,
        width,
        height,
        frames: frames.max(1),
        orientation,
    })
}

/// Size in px from the header of a `VP8 ` or `VP8L` chunk body.
fn bitstream_size(kind: &[u8], body: &[u8]) -> Result<(u32, u32)> {
    if kind == b"VP8L" {
        let (Some(&0x2f), Some(bits)) = (body.first(), le32(body, 1)) else {
            return Err(Error::corrupt("corrupt WebP: bad VP8L header"));
        };
        return Ok(((bits & 0x3fff) + 1, ((bits >> 14) & 0x3fff) + 1));
    }
    if body.get(3..6) != Some(&[0x9d, 0x01, 0x2a]) {
        return Err(Error::corrupt("corrupt WebP: bad VP8 start code"));
    }
    let (Some(w), Some(h)) = (le16(body, 6), le16(body, 8)) else {
        return Err(Error::truncated("WebP data ends inside the VP8 header"));
    };
    Ok((u32::from(w & 0x3fff), u32::from(h & 0x3fff)))
}

/// An animation frame (ANMF body) must hold a bitstream of the size its header
/// gives. image-webp 0.2.4 panics on a mismatch or an empty bitstream (found by
/// fuzzing; image-webp issue 182), so such a frame is refused here, before decode.
fn check_frame(body: &[u8]) -> Result<()> {
    let (Some(w), Some(h)) = (le24(body, 6), le24(body, 9)) else {
        return Err(Error::truncated("WebP data ends inside an ANMF header"));
    };
    let mut pos = 16;
    while pos + 8 <= body.len() {
        let kind = &body[pos..pos + 4];
        let len = le32(body, pos + 4).unwrap_or(0) as usize;
        let start = pos + 8;
        let Some(chunk) = body.get(start..start.saturating_add(len)) else {
            return Err(Error::corrupt(
                "corrupt WebP: chunk runs past its ANMF frame",
            ));
        };
        if kind == b"VP8 " || kind == b"VP8L" {
            let (bw, bh) = bitstream_size(kind, chunk)?;
            if (bw, bh) != (w + 1, h + 1) {
                return Err(Error::corrupt(format!(
                    "corrupt WebP: a {bw}x{bh} frame in a {}x{} ANMF",
                    w + 1,
                    h + 1
                )));
            }
            return Ok(());
        }
        pos = start.saturating_add(len).saturating_add(len & 1);
    }
    Err(Error::corrupt(
        "corrupt WebP: ANMF frame without image data",
    ))
}

fn check(size: Option<(u32, u32)>, limits: &Limits) -> Result<()> {
    match size {
        Some((w, h)) => limits.check_dimensions(u64::from(w), u64::from(h)),
        None => Ok(()),
    }
}

/// Lossy WebP of a rendition: a still for one frame, an animated WebP (every
/// frame, its delay, the loop count) otherwise, whose frames may each be lossy
/// or lossless (see [`encode_animation`]). Returns (bytes, frame count).
pub fn encode(
    r: &Rendition,
    plan: &Plan,
    loop_count: u32,
    deadline: Deadline,
) -> Result<(Vec<u8>, u32)> {
    let err = |detail: String| Error::Encode {
        format: "webp",
        detail,
    };
    let mut config =
        webp::WebPConfig::new().map_err(|()| err("libwebp config init failed".into()))?;
    config.quality = plan.webp_quality.clamp(0.0, 100.0);
    config.method = plan.webp_method.clamp(0, 6);
    config.alpha_compression = 1;
    let frames = r.frames.as_slice();
    let [first, ..] = frames else {
        return Err(err("no frames".into()));
    };
    if frames.len() == 1 {
        let encoder = match &first.image {
            DynamicImage::ImageRgba8(b) => webp::Encoder::from_rgba(b.as_raw(), r.width, r.height),
            DynamicImage::ImageRgb8(b) => webp::Encoder::from_rgb(b.as_raw(), r.width, r.height),
            _ => return Err(err("unexpected pixel layout".into())),
        };
        let mem = encoder
            .encode_advanced(&config)
            .map_err(|e| err(format!("{e:?}")))?;
        return Ok((mem.to_vec(), 1));
    }
    let mem = encode_animation(r, &config, loop_count, deadline)?;
    let delays: Vec<u32> = frames.iter().map(|f| f.delay_ms).collect();
    let data = super::webp_frames::restore_frames(&mem, &delays, r.width, r.height)
        .unwrap_or_else(|| mem.to_vec());
    let count = parse(&data, &crate::limits::Limits::default(), Mode::Whole)
        .map(|i| i.frames)
        .unwrap_or(1);
    Ok((data, count))
}

/// Owned `WebPAnimEncoder`, deleted on drop.
struct AnimEncoder(*mut sys::WebPAnimEncoder);

impl Drop for AnimEncoder {
    fn drop(&mut self) {
        // SAFETY: the pointer came from WebPAnimEncoderNewInternal and is deleted once.
        unsafe { sys::WebPAnimEncoderDelete(self.0) }
    }
}

/// Animated WebP of every frame of `r` (RGBA, composited onto the canvas by the decoder),
/// each shown from its start time, the last for its own delay, looping `loop_count` times
/// (0 = for ever).
///
/// libwebp's animation encoder runs with `allow_mixed`, as `gif2webp -mixed` does: each
/// frame is encoded lossy (at `config`'s quality) and lossless, and the smaller kept. GIF-like
/// frames (flat colours, few of them) then come out smaller than the GIF instead of several
/// times larger. Measured 2026-11-30 on the corpus' 380-frame 472x298 GIF (357 KB), one
/// encode each, load average 6: at full size 1.13 MB in 3.1 s lossy-only, 301 KB in 1.8 s
/// mixed; at the 200 px thumbnail (resized frames, where lossless seldom wins) 365 KB in
/// 1.0 s and 366 KB in 1.25 s. `minimize_size` was measured too: 293 KB but 2-4x the time,
/// so it stays off. `deadline` is checked before each frame.
/// Errors: [`Error::Encode`] with libwebp's message, [`Error::Timeout`].
fn encode_animation(
    r: &Rendition,
    config: &sys::WebPConfig,
    loop_count: u32,
    deadline: Deadline,
) -> Result<Vec<u8>> {
    use std::os::raw::c_int;

    let err = |detail: String| Error::Encode {
        format: "webp",
        detail,
    };

    let width = c_int::try_from(r.width).map_err(|_| err("width out of range".into()))?;
    let height = c_int::try_from(r.height).map_err(|_| err("height out of range".into()))?;
    // SAFETY: the options struct is initialised by libwebp before use; every picture is
    // initialised, imported from a buffer of width*height*4 bytes that outlives the call, and
    // freed once (WebPAnimEncoderAdd copies what it needs); the encoder is deleted by its
    // guard; the assembled data is copied out and then cleared once.
    unsafe {
        let mut options = std::mem::MaybeUninit::<sys::WebPAnimEncoderOptions>::uninit();
        if sys::WebPAnimEncoderOptionsInitInternal(
            options.as_mut_ptr(),
            sys::WEBP_MUX_ABI_VERSION as c_int,
        ) == 0
        {
            return Err(err("libwebp animation options init failed".into()));
        }
        let mut options = options.assume_init();
        options.allow_mixed = 1;
        options.anim_params.loop_count = c_int::try_from(loop_count).unwrap_or(0);
        options.anim_params.bgcolor = 0;
        let encoder = AnimEncoder(sys::WebPAnimEncoderNewInternal(
            width,
            height,
            &options,
            sys::WEBP_MUX_ABI_VERSION as c_int,
        ));
        if encoder.0.is_null() {
            return Err(err("out of memory (WebPAnimEncoderNew)".into()));
        }
        let last_error = |enc: &AnimEncoder| -> String {
            let text = sys::WebPAnimEncoderGetError(enc.0);
            if text.is_null() {
                "unknown error".into()
            } else {
                std::ffi::CStr::from_ptr(text)
                    .to_string_lossy()
                    .into_owned()
            }
        };
        let mut timestamp: c_int = 0;
        for frame in &r.frames {
            deadline.check("encoding an animation")?;
            let rgba = frame.image.to_rgba8();
            let mut picture =
                sys::WebPPicture::new().map_err(|()| err("libwebp picture init failed".into()))?;
            picture.use_argb = 1;
            picture.width = width;
            picture.height = height;
            if sys::WebPPictureImportRGBA(&mut picture, rgba.as_raw().as_ptr(), width * 4) == 0 {
                sys::WebPPictureFree(&mut picture);
                return Err(err("out of memory (WebPPictureImportRGBA)".into()));
            }
            let added = sys::WebPAnimEncoderAdd(encoder.0, &mut picture, timestamp, config);
            sys::WebPPictureFree(&mut picture);
            if added == 0 {
                return Err(err(last_error(&encoder)));
            }
            timestamp =
                timestamp.saturating_add(c_int::try_from(frame.delay_ms).unwrap_or(c_int::MAX));
        }
        // the end time gives the last frame its own delay
        if sys::WebPAnimEncoderAdd(encoder.0, std::ptr::null_mut(), timestamp, std::ptr::null())
            == 0
        {
            return Err(err(last_error(&encoder)));
        }
        let mut data = sys::WebPData::default();
        if sys::WebPAnimEncoderAssemble(encoder.0, &mut data) == 0 {
            return Err(err(last_error(&encoder)));
        }
        let bytes = if data.bytes.is_null() {
            Vec::new()
        } else {
            std::slice::from_raw_parts(data.bytes, data.size).to_vec()
        };
        sys::WebPDataClear(&mut data);
        if bytes.is_empty() {
            return Err(err("libwebp assembled an empty animation".into()));
        }
        Ok(bytes)
    }
}
