//! `_core.strip_metadata` on arbitrary bytes.
//! Errors are fine; a panic or abort is a crash.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        let _ = _core::fuzzing::strip(data);
    });
}
