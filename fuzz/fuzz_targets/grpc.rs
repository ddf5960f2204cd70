#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| vaultd::fuzzing::grpc(vaultd_fuzz::grpc_harness(), data));
