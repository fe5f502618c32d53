#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| kms_fuzz_targets::token_values(data));
