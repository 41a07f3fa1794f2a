//! The limits of Verge KV, checked once, before any backend runs.

use crate::error::KvError;

/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 512;
/// Largest value, in bytes (25 MiB).
pub const MAX_VALUE_BYTES: usize = 25 * 1024 * 1024;
/// Largest metadata, in bytes of JSON.
pub const MAX_METADATA_BYTES: usize = 1024;
/// Most keys one list page returns.
pub const MAX_LIST_LIMIT: u32 = 1000;
/// Most keys one bulk get reads.
pub const MAX_BULK_GET: usize = 100;
/// Most writes one bulk put or delete carries.
pub const MAX_BULK_WRITE: usize = 10_000;
/// Shortest TTL. Workers KV says 60 s; Verge expires precisely, so 1 s.
pub const MIN_TTL_SECONDS: u64 = 1;
/// The latest expiration, in Unix seconds: 9999-12-31T23:59:59Z, the last
/// second RFC 3339 can write. Later ones (or TTLs reaching past it) are
/// refused: stores keep expirations as signed 64-bit numbers, and a write
/// must never be acknowledged that no read can see.
pub const MAX_EXPIRATION: u64 = 253_402_300_799;

/// A key must be 1 to 512 bytes, and not `.` or `..`.
pub fn check_key(key: &[u8]) -> Result<(), KvError> {
    if key.is_empty() {
        return Err(KvError::KeyEmpty);
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(KvError::KeyTooLong {
            len: key.len(),
            limit: MAX_KEY_BYTES,
        });
    }
    if key == b"." || key == b".." {
        return Err(KvError::KeyInvalid);
    }
    Ok(())
}

/// Metadata must be JSON of at most 1024 bytes.
pub fn check_metadata(metadata: &str) -> Result<(), KvError> {
    if metadata.len() > MAX_METADATA_BYTES {
        return Err(KvError::MetadataTooLarge {
            len: metadata.len(),
            limit: MAX_METADATA_BYTES,
        });
    }
    serde_json::from_str::<serde_json::Value>(metadata)
        .map(drop)
        .map_err(|e| KvError::MetadataNotJson(e.to_string()))
}

/// Namespace names: 1 to 64 ASCII letters, digits, `-` or `_`.
pub fn check_namespace_name(name: &str) -> Result<(), KvError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(KvError::NamespaceInvalid(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_boundaries() {
        assert_eq!(check_key(&[b'k'; 512]), Ok(()));
        assert_eq!(
            check_key(&[b'k'; 513]),
            Err(KvError::KeyTooLong {
                len: 513,
                limit: 512
            })
        );
        assert_eq!(check_key(b""), Err(KvError::KeyEmpty));
        assert_eq!(check_key(b".."), Err(KvError::KeyInvalid));
        assert_eq!(check_key(b"..."), Ok(()));
    }

    #[test]
    fn metadata_boundaries() {
        let at_limit = format!("\"{}\"", "m".repeat(1022));
        assert_eq!(check_metadata(&at_limit), Ok(()));
        let over = format!("\"{}\"", "m".repeat(1023));
        assert_eq!(
            check_metadata(&over),
            Err(KvError::MetadataTooLarge {
                len: 1025,
                limit: 1024
            })
        );
        assert!(matches!(
            check_metadata("{not json"),
            Err(KvError::MetadataNotJson(_))
        ));
    }

    #[test]
    fn namespace_names() {
        assert!(check_namespace_name("todos_v2-a").is_ok());
        for bad in ["", "a b", "é", &"n".repeat(65)] {
            assert!(check_namespace_name(bad).is_err(), "{bad}");
        }
    }
}
