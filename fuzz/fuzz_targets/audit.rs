#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| vault_audit::fuzzing::audit(data));
