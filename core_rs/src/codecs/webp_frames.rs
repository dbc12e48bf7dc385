//! libwebp's animation encoder merges consecutive (near-)identical frames into one
//! longer frame. Playback is the same, but the file no longer has one frame per
//! source frame. This module splits merged frames again: the real frame shows for
//! its own delay, followed by fully transparent "hold" frames (same rectangle,
//! alpha-blended, so nothing changes on screen) carrying the delays of the frames
//! that were merged. The last hold frame inherits the disposal of the real frame.
//! Every frame then also gets its exact source delay (libwebp guesses the last one).

use libwebp_sys as sys;

/// Owned `WebPMux`, deleted on drop.
struct Mux(*mut sys::WebPMux);

impl Drop for Mux {
    fn drop(&mut self) {
        // SAFETY: the pointer came from WebPMuxNew/WebPMuxCreateInternal and is deleted once.
        unsafe { sys::WebPMuxDelete(self.0) }
    }
}

fn empty_data() -> sys::WebPData {
    sys::WebPData {
        bytes: std::ptr::null(),
        size: 0,
    }
}

/// Returns the animation with one ANMF per entry of `delays_ms`, or `None` when
/// the encoder output cannot be matched to the source timing (then the caller
/// keeps the encoder output, which plays the same).
pub fn restore_frames(
    encoded: &[u8],
    delays_ms: &[u32],
    width: u32,
    height: u32,
) -> Option<Vec<u8>> {
    // SAFETY: all pointers passed to libwebp are valid for the duration of each call;
    // frame bitstreams point into `src` (copy_data = 1 when pushing into `dst`).
    unsafe {
        let input = sys::WebPData {
            bytes: encoded.as_ptr(),
            size: encoded.len(),
        };
        let src = Mux(sys::WebPMuxCreateInternal(
            &input,
            0,
            sys::WEBP_MUX_ABI_VERSION as _,
        ));
        if src.0.is_null() {
            return None;
        }
        let mut count: std::ffi::c_int = 0;
        if sys::WebPMuxNumChunks(src.0, sys::WebPChunkId::WEBP_CHUNK_ANMF, &mut count)
            != sys::WebPMuxError::WEBP_MUX_OK
        {
            return None;
        }
        let count = usize::try_from(count).ok()?;
        let mut params = sys::WebPMuxAnimParams {
            bgcolor: 0,
            loop_count: 0,
        };
        if sys::WebPMuxGetAnimationParams(src.0, &mut params) != sys::WebPMuxError::WEBP_MUX_OK {
            return None;
        }
        let dst = Mux(sys::WebPMuxNew());
        if dst.0.is_null() || count == 0 {
            return None;
        }
        let mut next = 0usize; // next source frame
        for k in 0..count {
            let mut frame = sys::WebPMuxFrameInfo {
                bitstream: empty_data(),
                x_offset: 0,
                y_offset: 0,
                duration: 0,
                id: sys::WebPChunkId::WEBP_CHUNK_ANMF,
                dispose_method: sys::WebPMuxAnimDispose::WEBP_MUX_DISPOSE_NONE,
                blend_method: sys::WebPMuxAnimBlend::WEBP_MUX_BLEND,
                pad: [0],
            };
            if sys::WebPMuxGetFrame(src.0, u32::try_from(k + 1).ok()?, &mut frame)
                != sys::WebPMuxError::WEBP_MUX_OK
            {
                return None;
            }
            // how many source frames this output frame covers
            let run = if k + 1 == count {
                delays_ms.len().checked_sub(next)?
            } else {
                let target = i64::from(frame.duration);
                let mut sum = 0i64;
                let mut n = 0usize;
                while sum < target {
                    sum += i64::from(*delays_ms.get(next + n)?);
                    n += 1;
                }
                if sum != target {
                    return None;
                }
                n
            };
            if run == 0 {
                return None;
            }
            let dispose = frame.dispose_method;
            let (mut w, mut h): (std::ffi::c_int, std::ffi::c_int) = (0, 0);
            if sys::WebPGetInfo(frame.bitstream.bytes, frame.bitstream.size, &mut w, &mut h) == 0 {
                return None;
            }
            frame.duration = i32::try_from(*delays_ms.get(next)?).ok()?;
            if run > 1 {
                frame.dispose_method = sys::WebPMuxAnimDispose::WEBP_MUX_DISPOSE_NONE;
            }
            if sys::WebPMuxPushFrame(dst.0, &frame, 1) != sys::WebPMuxError::WEBP_MUX_OK {
                return None;
            }
            if run > 1 {
                let hold = transparent_webp(u32::try_from(w).ok()?, u32::try_from(h).ok()?)?;
                for t in 1..run {
                    let info = sys::WebPMuxFrameInfo {
                        bitstream: sys::WebPData {
                            bytes: hold.as_ptr(),
                            size: hold.len(),
                        },
                        x_offset: frame.x_offset,
                        y_offset: frame.y_offset,
                        duration: i32::try_from(*delays_ms.get(next + t)?).ok()?,
                        id: sys::WebPChunkId::WEBP_CHUNK_ANMF,
                        dispose_method: if t + 1 == run {
                            dispose
                        } else {
                            sys::WebPMuxAnimDispose::WEBP_MUX_DISPOSE_NONE
                        },
                        blend_method: sys::WebPMuxAnimBlend::WEBP_MUX_BLEND,
                        pad: [0],
                    };
                    if sys::WebPMuxPushFrame(dst.0, &info, 1) != sys::WebPMuxError::WEBP_MUX_OK {
                        return None;
                    }
                }
            }
            next += run;
        }
        if next != delays_ms.len() {
            return None;
        }
        let (cw, ch) = (
            std::ffi::c_int::try_from(width).ok()?,
            std::ffi::c_int::try_from(height).ok()?,
        );
        if sys::WebPMuxSetCanvasSize(dst.0, cw, ch) != sys::WebPMuxError::WEBP_MUX_OK {
            return None;
        }
        if sys::WebPMuxSetAnimationParams(dst.0, &params) != sys::WebPMuxError::WEBP_MUX_OK {
            return None;
        }
        let mut out = empty_data();
        if sys::WebPMuxAssemble(dst.0, &mut out) != sys::WebPMuxError::WEBP_MUX_OK
            || out.bytes.is_null()
        {
            return None;
        }
        let bytes = std::slice::from_raw_parts(out.bytes, out.size).to_vec();
        sys::WebPDataClear(&mut out);
        Some(bytes)
    }
}

/// A fully transparent lossless WebP still of `w` x `h` (compresses to a few bytes).
fn transparent_webp(w: u32, h: u32) -> Option<Vec<u8>> {
    let pixels = vec![0u8; (w as usize).checked_mul(h as usize)?.checked_mul(4)?];
    let encoder = webp::Encoder::from_rgba(&pixels, w, h);
    encoder.encode_simple(true, 100.0).ok().map(|m| m.to_vec())
}
