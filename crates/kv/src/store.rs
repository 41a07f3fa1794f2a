//! The trait a storage backend implements.

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::KvError;
use crate::types::{Entry, ListPage};

/// One write, as a backend receives it: already validated, expiration made
/// absolute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOp {
    Put {
        key: Vec<u8>,
        value: Bytes,
        metadata: Option<String>,
        expiration: Option<u64>,
        condition: crate::Condition,
    },
    Delete {
        key: Vec<u8>,
    },
    Increment {
        key: Vec<u8>,
        delta: i64,
    },
}

/// What one write did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    /// A put: the entry's new generation.
    Put { generation: u64 },
    /// A delete: whether a live entry was there.
    Deleted(bool),
    /// An increment: the new value and generation.
    Incremented { value: i64, generation: u64 },
}

/// A place KV entries live. Inputs arrive validated (see
/// [`Namespace`](crate::Namespace)); a backend enforces semantics: byte
/// order, expiration at read time, conditions, atomic increments, and
/// durability before a write is acknowledged.
#[async_trait]
pub trait KvStore: Send + Sync {
    /// Creates a namespace; `false` if it existed.
    async fn create_namespace(&self, name: &str) -> Result<bool, KvError>;

    /// Deletes a namespace and every entry in it; `false` if it did not exist.
    async fn delete_namespace(&self, name: &str) -> Result<bool, KvError>;

    /// Every namespace, in name order.
    async fn namespaces(&self) -> Result<Vec<String>, KvError>;

    /// The live entries of `keys` (`None` where absent or expired), in order.
    async fn get(
        &self,
        namespace: &str,
        keys: &[Vec<u8>],
        now: u64,
    ) -> Result<Vec<Option<Entry>>, KvError>;

    /// Applies writes in order, atomically as a whole; each has its own
    /// outcome. A failed condition or a non-integer increment fails that
    /// write alone.
    async fn write(
        &self,
        namespace: &str,
        ops: Vec<WriteOp>,
        now: u64,
    ) -> Result<Vec<Result<WriteOutcome, KvError>>, KvError>;

    /// Live keys starting with `prefix` and after `after`, in byte order, at
    /// most `limit` (validated to 1..=1000), and whether more follow.
    async fn list(
        &self,
        namespace: &str,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: u32,
        now: u64,
    ) -> Result<ListPage, KvError>;
}
