//! See [`ferry_fuzz::targets::seal_open`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferry_fuzz::targets::seal_open(data));
