//! `.dev.vars`: any text is secrets or a located error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    match verge_manifest::parse_dev_vars(text) {
        Ok(vars) => {
            for (name, _) in vars {
                assert!(!name.is_empty());
                assert!(name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
            }
        }
        Err((line, _)) => assert!(line >= 1 && line <= text.lines().count()),
    }
});
