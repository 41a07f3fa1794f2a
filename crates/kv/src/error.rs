//! What can go wrong with a KV operation. Every variant is something a guest
//! can handle; a backend fault that must not reach the guest is `Unavailable`.

/// A KV operation that did not happen, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    #[error("key is empty")]
    KeyEmpty,
    #[error("key is {len} bytes, above the limit of {limit}")]
    KeyTooLong { len: usize, limit: usize },
    #[error("key may not be `.` or `..`")]
    KeyInvalid,
    #[error("value is {len} bytes, above the limit of {limit}")]
    ValueTooLarge { len: usize, limit: usize },
    #[error("metadata is {len} bytes, above the limit of {limit}")]
    MetadataTooLarge { len: usize, limit: usize },
    #[error("metadata is not valid JSON: {0}")]
    MetadataNotJson(String),
    #[error("invalid expiration: {0}")]
    BadExpiration(String),
    #[error("list limit {limit} is outside 1..={max}")]
    BadLimit { limit: u32, max: u32 },
    #[error("invalid list cursor")]
    BadCursor,
    #[error("{count} keys in one call, above the limit of {limit}")]
    TooManyKeys { count: usize, limit: usize },
    #[error("the put's condition does not hold")]
    ConditionFailed,
    #[error("the value of `{key}` is not an integer")]
    NotAnInteger { key: String },
    #[error("increment overflows a 64-bit integer")]
    Overflow,
    #[error("namespace `{0}` does not exist")]
    NamespaceNotFound(String),
    #[error("invalid namespace name {0:?}: use 1 to 64 letters, digits, `-` or `_`")]
    NamespaceInvalid(String),
    #[error("the KV store is unavailable: {0}")]
    Unavailable(String),
}
