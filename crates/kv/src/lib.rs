//! Verge KV: the semantics of Workers KV (and a little more), independent of
//! where entries are stored.
//!
//! [`KvStore`] is the trait a backend implements (SQLite on one machine,
//! PostgreSQL for a cluster); [`Namespace`] wraps a store and a namespace
//! name and checks every limit before the backend sees a request, so all
//! backends refuse the same inputs with the same errors. [`CachedStore`]
//! keeps reads of a shared store in memory. Errors a guest can
//! handle are [`KvError`] values. This crate holds no storage and no network
//! code.

mod cache;
mod clock;
#[cfg(feature = "conformance")]
pub mod conformance;
mod error;
mod limits;
mod namespace;
mod store;
mod types;

pub use cache::{CacheConfig, CacheStats, CachedStore};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::KvError;
pub use limits::{
    MAX_BULK_GET, MAX_BULK_WRITE, MAX_EXPIRATION, MAX_KEY_BYTES, MAX_LIST_LIMIT,
    MAX_METADATA_BYTES, MAX_VALUE_BYTES, MIN_TTL_SECONDS, check_key, check_metadata,
    check_namespace_name,
};
pub use namespace::{BulkWrite, Namespace};
pub use store::{KvStore, WriteOp, WriteOutcome};
pub use types::{
    Condition, Entry, Expiration, ListKey, ListOptions, ListPage, PutOptions, decode_cursor,
    encode_cursor, prefix_end,
};
