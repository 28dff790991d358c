//! See [`ferry_fuzz::targets::handshake`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferry_fuzz::targets::handshake(data));
