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
use std::os::raw::c_int;

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

/// libwebp's settings for `plan`: lossy at its quality and method, alpha compressed.
pub fn config(plan: &Plan) -> Result<sys::WebPConfig> {
    let mut config = webp::WebPConfig::new().map_err(|()| Error::Encode {
        format: "webp",
        detail: "libwebp config init failed".into(),
    })?;
    config.quality = plan.webp_quality.clamp(0.0, 100.0);
    config.method = plan.webp_method.clamp(0, 6);
    config.alpha_compression = 1;
    Ok(config)
}

/// Lossy WebP of a rendition: a still for one frame, an animated WebP (every
/// frame, its delay, the loop count) otherwise, whose frames may each be lossy
/// or lossless (see [`AnimWriter`]). Returns (bytes, frame count). Animated sources
/// do not come here with all their frames: `steps::animate` feeds an [`AnimWriter`]
/// frame by frame.
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
    let config = config(plan)?;
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
    let mut writer = AnimWriter::new(r.width, r.height, config, loop_count)?;
    for frame in frames {
        deadline.check("encoding an animation")?;
        writer.add(&frame.image, frame.delay_ms)?;
    }
    writer.finish()
}

/// Owned `WebPAnimEncoder`, deleted on drop.
struct AnimEncoder(*mut sys::WebPAnimEncoder);

impl Drop for AnimEncoder {
    fn drop(&mut self) {
        // SAFETY: the pointer came from WebPAnimEncoderNewInternal and is deleted once.
        unsafe { sys::WebPAnimEncoderDelete(self.0) }
    }
}

/// An animated WebP being written one frame at a time: each frame is copied into
/// libwebp's encoder by [`AnimWriter::add`] (which keeps its own canvases, a few times
/// the frame's size, and the frames it has encoded, never the decoded ones), so the
/// caller can drop it at once; [`AnimWriter::finish`] assembles the file.
///
/// Every frame is RGBA, composited onto the canvas by the decoder, shown from its start
/// time, the last for its own delay, looping `loop_count` times (0 = for ever).
///
/// libwebp's animation encoder runs with `allow_mixed`, as `gif2webp -mixed` does: each
/// frame is encoded lossy (at `config`'s quality) and lossless, and the smaller kept. GIF-like
/// frames (flat colours, few of them) then come out smaller than the GIF instead of several
/// times larger. Measured 2026-11-30 on the corpus' 380-frame 472x298 GIF (357 KB), one
/// encode each, load average 6: at full size 1.13 MB in 3.1 s lossy-only, 301 KB in 1.8 s
/// mixed; at the 200 px thumbnail (resized frames, where lossless seldom wins) 365 KB in
/// 1.0 s and 366 KB in 1.25 s. `minimize_size` was measured too: 293 KB but 2-4x the time,
/// so it stays off.
/// Errors: [`Error::Encode`] with libwebp's message.
pub struct AnimWriter {
    encoder: AnimEncoder,
    config: sys::WebPConfig,
    width: u32,
    height: u32,
    /// Start time of the next frame, ms.
    timestamp: c_int,
    /// Every frame's delay so far, for [`restore_frames`](super::webp_frames::restore_frames).
    delays: Vec<u32>,
}

// SAFETY: a WebPAnimEncoder has no thread affinity (no thread-local state); `AnimWriter`
// owns it and only ever uses it through `&mut self`, so from one thread at a time.
unsafe impl Send for AnimWriter {}

fn encode_err(detail: String) -> Error {
    Error::Encode {
        format: "webp",
        detail,
    }
}

impl AnimWriter {
    pub fn new(width: u32, height: u32, config: sys::WebPConfig, loop_count: u32) -> Result<Self> {
        let w = c_int::try_from(width).map_err(|_| encode_err("width out of range".into()))?;
        let h = c_int::try_from(height).map_err(|_| encode_err("height out of range".into()))?;
        // SAFETY: the options struct is initialised by libwebp before use; the encoder is
        // deleted by its guard.
        unsafe {
            let mut options = std::mem::MaybeUninit::<sys::WebPAnimEncoderOptions>::uninit();
            if sys::WebPAnimEncoderOptionsInitInternal(
                options.as_mut_ptr(),
                sys::WEBP_MUX_ABI_VERSION as c_int,
            ) == 0
            {
                return Err(encode_err("libwebp animation options init failed".into()));
            }
            let mut options = options.assume_init();
            options.allow_mixed = 1;
            options.anim_params.loop_count = c_int::try_from(loop_count).unwrap_or(0);
            options.anim_params.bgcolor = 0;
            let encoder = AnimEncoder(sys::WebPAnimEncoderNewInternal(
                w,
                h,
                &options,
                sys::WEBP_MUX_ABI_VERSION as c_int,
            ));
            if encoder.0.is_null() {
                return Err(encode_err("out of memory (WebPAnimEncoderNew)".into()));
            }
            Ok(AnimWriter {
                encoder,
                config,
                width,
                height,
                timestamp: 0,
                delays: Vec::new(),
            })
        }
    }

    fn last_error(&self) -> String {
        // SAFETY: the encoder is alive; libwebp returns NULL or a NUL-terminated string it owns.
        unsafe {
            let text = sys::WebPAnimEncoderGetError(self.encoder.0);
            if text.is_null() {
                "unknown error".into()
            } else {
                std::ffi::CStr::from_ptr(text)
                    .to_string_lossy()
                    .into_owned()
            }
        }
    }

    /// Encodes the next frame (the writer's size), shown for `delay_ms`.
    pub fn add(&mut self, image: &DynamicImage, delay_ms: u32) -> Result<()> {
        if (image.width(), image.height()) != (self.width, self.height) {
            return Err(encode_err("frame does not match the animation size".into()));
        }
        let converted;
        let rgba = match image {
            DynamicImage::ImageRgba8(b) => b,
            other => {
                converted = other.to_rgba8();
                &converted
            }
        };
        let (w, h) = (self.width as c_int, self.height as c_int);
        // SAFETY: the picture is initialised, imported from a buffer of width*height*4 bytes
        // that outlives the call, and freed once (WebPAnimEncoderAdd copies what it needs).
        unsafe {
            let mut picture = sys::WebPPicture::new()
                .map_err(|()| encode_err("libwebp picture init failed".into()))?;
            picture.use_argb = 1;
            picture.width = w;
            picture.height = h;
            if sys::WebPPictureImportRGBA(&mut picture, rgba.as_raw().as_ptr(), w * 4) == 0 {
                sys::WebPPictureFree(&mut picture);
                return Err(encode_err("out of memory (WebPPictureImportRGBA)".into()));
            }
            let added =
                sys::WebPAnimEncoderAdd(self.encoder.0, &mut picture, self.timestamp, &self.config);
            sys::WebPPictureFree(&mut picture);
            if added == 0 {
                return Err(encode_err(self.last_error()));
            }
        }
        self.timestamp = self
            .timestamp
            .saturating_add(c_int::try_from(delay_ms).unwrap_or(c_int::MAX));
        self.delays.push(delay_ms);
        Ok(())
    }

    /// The animated WebP, one ANMF per added frame with its exact delay
    /// (merged frames split back, see `webp_frames`), and its frame count.
    pub fn finish(self) -> Result<(Vec<u8>, u32)> {
        // SAFETY: the encoder is alive; the assembled data is copied out and then cleared once.
        let mem = unsafe {
            // the end time gives the last frame its own delay
            if sys::WebPAnimEncoderAdd(
                self.encoder.0,
                std::ptr::null_mut(),
                self.timestamp,
                std::ptr::null(),
            ) == 0
            {
                return Err(encode_err(self.last_error()));
            }
            let mut data = sys::WebPData::default();
            if sys::WebPAnimEncoderAssemble(self.encoder.0, &mut data) == 0 {
                return Err(encode_err(self.last_error()));
            }
            let bytes = if data.bytes.is_null() {
                Vec::new()
            } else {
                std::slice::from_raw_parts(data.bytes, data.size).to_vec()
            };
            sys::WebPDataClear(&mut data);
            bytes
        };
        if mem.is_empty() {
            return Err(encode_err("libwebp assembled an empty animation".into()));
        }
        drop(self.encoder);
        let data = super::webp_frames::restore_frames(&mem, &self.delays, self.width, self.height)
            .unwrap_or(mem);
        let count = parse(&data, &crate::limits::Limits::default(), Mode::Whole)
            .map(|i| i.frames)
            .unwrap_or(1);
        Ok((data, count))
    }
}
