//! The values KV operations take and return.

use bytes::Bytes;

use crate::error::KvError;

/// A stored value with what goes with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub value: Bytes,
    /// JSON text, if the entry has metadata.
    pub metadata: Option<String>,
    /// Unix seconds after which the entry no longer exists.
    pub expiration: Option<u64>,
    /// Changes on every write of the key; compare it to put conditionally.
    pub generation: u64,
}

/// When a put expires.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Expiration {
    #[default]
    Never,
    /// At this Unix time, in seconds; must be in the future.
    At(u64),
    /// This many seconds from now; at least 1.
    Ttl(u64),
}

impl Expiration {
    /// From the `expiration_ttl` and `expiration` of Workers KV's APIs: a
    /// TTL wins over an absolute time, as there.
    pub fn from_ttl_or_at(ttl: Option<u64>, at: Option<u64>) -> Expiration {
        match (ttl, at) {
            (Some(ttl), _) => Expiration::Ttl(ttl),
            (None, Some(at)) => Expiration::At(at),
            (None, None) => Expiration::Never,
        }
    }
}

/// When a put may happen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Condition {
    #[default]
    Always,
    /// Only if the key holds no live entry.
    IfAbsent,
    /// Only if the key's live entry has this generation (compare-and-swap).
    IfGeneration(u64),
}

/// Options of a put.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutOptions {
    pub expiration: Expiration,
    pub metadata: Option<String>,
    pub condition: Condition,
}

/// Options of a list call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// Only keys starting with these bytes.
    pub prefix: Vec<u8>,
    /// Keys per page, 1 to 1000; `None` means 1000.
    pub limit: Option<u32>,
    /// Where the previous page ended.
    pub cursor: Option<String>,
}

/// One key of a list page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListKey {
    pub name: Vec<u8>,
    pub expiration: Option<u64>,
    pub metadata: Option<String>,
}

/// A page of keys in byte order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListPage {
    pub keys: Vec<ListKey>,
    /// Pass it back to get the next page; `None` when the list is complete.
    pub cursor: Option<String>,
    pub list_complete: bool,
}

impl ListPage {
    /// The page made of up to `limit + 1` keys a backend fetched in order:
    /// the extra key only tells that more follow.
    pub fn from_fetched(mut keys: Vec<ListKey>, limit: u32) -> ListPage {
        let more = keys.len() > limit as usize;
        keys.truncate(limit as usize);
        let cursor = if more {
            keys.last().map(|k| encode_cursor(&k.name))
        } else {
            None
        };
        ListPage {
            keys,
            cursor,
            list_complete: !more,
        }
    }
}

/// The smallest key above every key starting with `prefix`, if any: the
/// exclusive upper bound of a prefix scan.
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// The cursor that continues after `last_key`. Opaque to callers: the hex of
/// the last key returned, which keeps it printable and URL-safe.
pub fn encode_cursor(last_key: &[u8]) -> String {
    last_key.iter().map(|b| format!("{b:02x}")).collect()
}

/// The last key of the previous page, from its cursor.
pub fn decode_cursor(cursor: &str) -> Result<Vec<u8>, KvError> {
    // Hex digits only: `u8::from_str_radix` would take "+f" too, giving a
    // key a second cursor.
    if cursor.is_empty()
        || !cursor.len().is_multiple_of(2)
        || cursor.len() > 2 * crate::MAX_KEY_BYTES
        || !cursor.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(KvError::BadCursor);
    }
    (0..cursor.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(cursor.get(i..i + 2).ok_or(KvError::BadCursor)?, 16)
                .map_err(|_| KvError::BadCursor)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_is_hex_digits_only() {
        assert_eq!(decode_cursor("0f"), Ok(vec![0x0f]));
        assert_eq!(decode_cursor("+f"), Err(KvError::BadCursor));
        assert_eq!(decode_cursor("-1"), Err(KvError::BadCursor));
    }

    #[test]
    fn cursors_round_trip_any_bytes() {
        let key = vec![0u8, 0xff, b'a', 0x80];
        assert_eq!(decode_cursor(&encode_cursor(&key)), Ok(key));
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[b'a', 0xff]), Some(b"b".to_vec()));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        assert_eq!(prefix_end(b""), None);
        for bad in ["", "abc", "zz", "0g"] {
            assert_eq!(decode_cursor(bad), Err(KvError::BadCursor), "{bad}");
        }
    }
}
