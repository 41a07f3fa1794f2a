//! KV keys and list cursors, which clients and guests send as they like:
//! a cursor decodes to a key or is refused, every key's cursor decodes back
//! to it, and a key has one cursor only.
#![no_main]

use libfuzzer_sys::fuzz_target;
use verge_kv::{check_key, decode_cursor, encode_cursor};

fuzz_target!(|data: &[u8]| {
    // A list continues after a key it returned, never an empty one.
    if check_key(data).is_ok() {
        assert_eq!(decode_cursor(&encode_cursor(data)).unwrap(), data);
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(key) = decode_cursor(text)
    {
        assert_eq!(encode_cursor(&key), text.to_ascii_lowercase());
    }
});
