//! The one error type of the core, and its mapping to Python exception classes.
//!
//! `pixelfox/imaging.py` maps these private classes once more onto the public
//! `ImageError` tree; the Rust side never formats HTTP or gRPC concerns.

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::PyErr;

create_exception!(
    _core,
    CoreError,
    PyException,
    "Base class of every error raised by pixelfox._core."
);
create_exception!(
    _core,
    CorruptImageError,
    CoreError,
    "Truncated or broken image data, or an empty file."
);
create_exception!(
    _core,
    UnsupportedFormatError,
    CoreError,
    "Not an image, or an image format PixelFox does not accept."
);
create_exception!(
    _core,
    LimitExceededError,
    CoreError,
    "The image is over one of the configured limits."
);

create_exception!(
    _core,
    TimeoutError,
    CoreError,
    "Processing took longer than the configured time limit."
);

/// Everything that can go wrong inside the core. Messages are safe to show to users.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Truncated/broken data, empty input, decoder failure.
    #[error("{0}")]
    Corrupt(String),
    /// Detected something we do not accept; the message names it.
    #[error("{0}")]
    Unsupported(String),
    /// Over a pixel/dimension/frame/byte limit.
    #[error("{0}")]
    Limit(String),
    /// Over the per-image time limit (checked between steps and per frame/job):
    /// seconds since the call began, the step that noticed it, the limit (ms).
    #[error("processing stopped after {elapsed_s:.1} s during {step}: over the {limit_ms} ms time limit")]
    Timeout {
        elapsed_s: f64,
        step: String,
        limit_ms: u64,
    },
    /// An encoder refused valid pixels (should not happen; reported, not panicked).
    #[error("encoding {format} failed: {detail}")]
    Encode {
        format: &'static str,
        detail: String,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn corrupt(msg: impl Into<String>) -> Self {
        Error::Corrupt(msg.into())
    }
    pub fn truncated(what: impl std::fmt::Display) -> Self {
        Error::Corrupt(format!("truncated image: {what}"))
    }
    pub fn unsupported(name: impl std::fmt::Display) -> Self {
        Error::Unsupported(format!("unsupported format: {name}"))
    }
}

impl From<image::ImageError> for Error {
    fn from(err: image::ImageError) -> Self {
        use image::error::{ImageError as E, LimitErrorKind};
        match err {
            E::Limits(l) => match l.kind() {
                LimitErrorKind::DimensionError => {
                    Error::Limit(format!("image exceeds the size limits: {l}"))
                }
                _ => Error::Limit(format!("image exceeds the memory limit: {l}")),
            },
            E::Unsupported(u) => Error::Unsupported(format!("unsupported image feature: {u}")),
            E::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Error::truncated(e),
            other => Error::Corrupt(format!("corrupt image: {other}")),
        }
    }
}

impl From<Error> for PyErr {
    fn from(err: Error) -> PyErr {
        let msg = err.to_string();
        match err {
            Error::Corrupt(_) => CorruptImageError::new_err(msg),
            Error::Unsupported(_) => UnsupportedFormatError::new_err(msg),
            Error::Limit(_) => LimitExceededError::new_err(msg),
            // args (message, elapsed seconds, step): callers word their own message from them
            Error::Timeout {
                elapsed_s, step, ..
            } => TimeoutError::new_err((msg, elapsed_s, step)),
            Error::Encode { .. } => CoreError::new_err(msg),
        }
    }
}
