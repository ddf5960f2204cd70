#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| vault_crypto::fuzzing::envelope(data));
