#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| kms_fuzz_targets::tls13_sm2_verify(data));
