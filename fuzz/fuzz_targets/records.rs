#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| vaultd::fuzzing::records(data));
