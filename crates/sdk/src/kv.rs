//! Verge KV from the guest: Workers-KV semantics, reached by a direct host
//! call (microseconds, not a REST round trip).
//!
//! ```no_run
//! # fn demo(env: verge_sdk::Env) -> Result<(), verge_sdk::Error> {
//! let kv = env.kv("TODOS")?;
//! kv.put("greeting", "hello").expiration_ttl(3600).execute()?;
//! let text: Option<String> = kv.get("greeting").text()?;
//! let hits = kv.increment("hits", 1)?;
//! for key in kv.list().prefix("todo:").keys() {
//!     println!("{}", key?.name);
//! }
//! # Ok(()) }
//! ```

use std::fmt;
use std::rc::Rc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;
use crate::bindings::verge::kv::store as wit;

/// Why a KV operation did not happen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvError {
    /// Keys are 1 to 512 bytes, and not `.` or `..`.
    InvalidKey(String),
    /// The value is over 25 MiB (the size given).
    ValueTooLarge(u64),
    /// Metadata is not JSON or over 1024 bytes.
    InvalidMetadata(String),
    /// An expiration in the past, or a TTL under 1 second.
    BadExpiration(String),
    /// A list limit outside 1..=1000, a bad cursor, too many keys.
    BadRequest(String),
    /// `if_absent` or `if_generation` did not hold.
    ConditionFailed,
    /// `increment` on a value that is not a decimal integer, or overflow.
    NotAnInteger(String),
    /// No namespace is bound under this binding name.
    NotBound(String),
    /// The store cannot be reached; retrying later may work.
    Unavailable(String),
    /// The value is not UTF-8 text or not the JSON asked for.
    Decode(String),
}

impl fmt::Display for KvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvError::InvalidKey(why) => write!(f, "invalid key: {why}"),
            KvError::ValueTooLarge(size) => {
                write!(f, "value of {size} bytes is over the 25 MiB limit")
            }
            KvError::InvalidMetadata(why) => write!(f, "invalid metadata: {why}"),
            KvError::BadExpiration(why) => write!(f, "bad expiration: {why}"),
            KvError::BadRequest(why) => f.write_str(why),
            KvError::ConditionFailed => f.write_str("the entry changed (condition failed)"),
            KvError::NotAnInteger(why) => f.write_str(why),
            KvError::NotBound(binding) => write!(
                f,
                "no KV namespace is bound as `{binding}`: add \
                 [[kv_namespaces]] binding = \"{binding}\", namespace = \"...\" to verge.toml"
            ),
            KvError::Unavailable(why) => write!(f, "KV store unavailable: {why}"),
            KvError::Decode(why) => write!(f, "stored value cannot be decoded: {why}"),
        }
    }
}

impl std::error::Error for KvError {}

impl From<wit::Error> for KvError {
    fn from(e: wit::Error) -> KvError {
        match e {
            wit::Error::KeyEmpty => KvError::InvalidKey("the key is empty".into()),
            wit::Error::KeyTooLong(n) => {
                KvError::InvalidKey(format!("{n} bytes, over the 512-byte limit"))
            }
            wit::Error::KeyInvalid => KvError::InvalidKey("`.` and `..` are not keys".into()),
            wit::Error::ValueTooLarge(n) => KvError::ValueTooLarge(n),
            wit::Error::MetadataTooLarge(n) => {
                KvError::InvalidMetadata(format!("{n} bytes, over the 1024-byte limit"))
            }
            wit::Error::MetadataNotJson(why) => KvError::InvalidMetadata(why),
            wit::Error::BadExpiration(why) => KvError::BadExpiration(why),
            wit::Error::BadLimit(n) => {
                KvError::BadRequest(format!("list limit {n} is not between 1 and 1000"))
            }
            wit::Error::BadCursor => KvError::BadRequest("the list cursor is not valid".into()),
            wit::Error::TooManyKeys(n) => {
                KvError::BadRequest(format!("{n} keys in one call, over the limit of 100"))
            }
            wit::Error::ConditionFailed => KvError::ConditionFailed,
            wit::Error::NotAnInteger => {
                KvError::NotAnInteger("the value is not a decimal integer".into())
            }
            wit::Error::Overflow => KvError::NotAnInteger("the increment overflows i64".into()),
            wit::Error::NamespaceNotBound(binding) => KvError::NotBound(binding),
            wit::Error::Unavailable(why) => KvError::Unavailable(why),
        }
    }
}

impl From<KvError> for Error {
    /// A condition that failed is a 412, an unreachable store a 503; the
    /// rest are the worker's own faults: 500, with the reason in the log.
    fn from(e: KvError) -> Error {
        match e {
            KvError::ConditionFailed => Error::precondition_failed(e.to_string()),
            KvError::Unavailable(_) => {
                Error::unavailable("storage is unavailable, try again").with_detail(e)
            }
            e => Error::internal(e),
        }
    }
}

/// A KV namespace bound to the worker; see [`Env::kv`](crate::Env::kv).
#[derive(Clone)]
pub struct Kv {
    bucket: Rc<wit::Bucket>,
}

impl fmt::Debug for Kv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Kv")
    }
}

impl Kv {
    pub(crate) fn open(binding: &str) -> Result<Kv, KvError> {
        let bucket = wit::Bucket::open(binding)?;
        Ok(Kv {
            bucket: Rc::new(bucket),
        })
    }

    /// Reads `key`: finish with [`Get::text`], [`Get::bytes`], [`Get::json`]
    /// or [`Get::entry`] (value with metadata, expiration and generation).
    pub fn get(&self, key: impl AsRef<[u8]>) -> Get<'_> {
        Get {
            kv: self,
            key: key.as_ref().to_vec(),
        }
    }

    /// Reads up to 100 keys in one call, in order.
    pub fn get_many<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<Vec<Option<Entry>>, KvError> {
        let keys: Vec<Vec<u8>> = keys.iter().map(|k| k.as_ref().to_vec()).collect();
        let entries = self.bucket.get_many(&keys)?;
        Ok(entries.into_iter().map(|e| e.map(Entry::from)).collect())
    }

    /// Writes `value` under `key`: add options, then call [`Put::execute`].
    pub fn put(&self, key: impl AsRef<[u8]>, value: impl Into<Vec<u8>>) -> Put<'_> {
        Put::new(self, key.as_ref().to_vec(), Ok(value.into()))
    }

    /// Writes `value` as JSON under `key`.
    pub fn put_json<T: Serialize + ?Sized>(&self, key: impl AsRef<[u8]>, value: &T) -> Put<'_> {
        let value = serde_json::to_vec(value).map_err(|e| KvError::Decode(e.to_string()));
        Put::new(self, key.as_ref().to_vec(), value)
    }

    /// Deletes `key`; whether a live entry was there.
    pub fn delete(&self, key: impl AsRef<[u8]>) -> Result<bool, KvError> {
        Ok(self.bucket.delete(key.as_ref())?)
    }

    /// Adds `delta` to the decimal integer under `key` (0 if absent),
    /// atomically; the new value.
    pub fn increment(&self, key: impl AsRef<[u8]>, delta: i64) -> Result<i64, KvError> {
        Ok(self.bucket.increment(key.as_ref(), delta)?)
    }

    /// Lists keys in byte order: narrow with [`List::prefix`], then take one
    /// [`List::page`] or iterate every key with [`List::keys`].
    pub fn list(&self) -> List {
        List {
            kv: self.clone(),
            prefix: Vec::new(),
            limit: None,
            cursor: None,
        }
    }
}

/// A stored value with what KV keeps beside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The value's bytes.
    pub value: Vec<u8>,
    /// The metadata, as JSON text.
    pub metadata: Option<String>,
    /// Unix seconds after which the entry is gone.
    pub expiration: Option<u64>,
    /// Changes on every write: use it as an ETag and give it to
    /// [`Put::if_generation`] to write only if nothing changed since.
    pub generation: u64,
}

impl From<wit::Entry> for Entry {
    fn from(e: wit::Entry) -> Entry {
        Entry {
            value: e.value,
            metadata: e.metadata,
            expiration: e.expiration,
            generation: e.generation,
        }
    }
}

impl Entry {
    /// The value as UTF-8 text.
    pub fn text(&self) -> Result<&str, KvError> {
        std::str::from_utf8(&self.value).map_err(|e| KvError::Decode(e.to_string()))
    }

    /// The value parsed as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, KvError> {
        serde_json::from_slice(&self.value).map_err(|e| KvError::Decode(e.to_string()))
    }

    /// The metadata parsed as JSON.
    pub fn metadata<M: DeserializeOwned>(&self) -> Result<Option<M>, KvError> {
        self.metadata
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| KvError::Decode(e.to_string()))
    }
}

/// A read in progress; see [`Kv::get`]. Nothing is read until one of its
/// methods (`text`, `json`, `bytes`, `entry`) is called.
#[must_use = "nothing is read until `.text()`, `.json()`, `.bytes()` or `.entry()` is called"]
pub struct Get<'a> {
    kv: &'a Kv,
    key: Vec<u8>,
}

impl Get<'_> {
    /// The whole entry: value, metadata, expiration, generation.
    pub fn entry(self) -> Result<Option<Entry>, KvError> {
        Ok(self.kv.bucket.get(&self.key)?.map(Entry::from))
    }

    /// The value's bytes.
    pub fn bytes(self) -> Result<Option<Vec<u8>>, KvError> {
        Ok(self.entry()?.map(|e| e.value))
    }

    /// The value as text.
    pub fn text(self) -> Result<Option<String>, KvError> {
        self.bytes()?
            .map(|b| String::from_utf8(b).map_err(|e| KvError::Decode(e.to_string())))
            .transpose()
    }

    /// The value parsed as JSON.
    pub fn json<T: DeserializeOwned>(self) -> Result<Option<T>, KvError> {
        self.entry()?.map(|e| e.json()).transpose()
    }
}

/// A write in progress; see [`Kv::put`]. Nothing is written until
/// [`Put::execute`]: an unused `kv.put(key, value);` is a compile warning
/// (an error under `#![deny(warnings)]`).
///
/// ```compile_fail
/// #![deny(unused_must_use)]
/// # fn demo(kv: &verge_sdk::kv::Kv) {
/// kv.put("greeting", "hello");
/// # }
/// ```
#[must_use = "nothing is written until `.execute()` is called"]
pub struct Put<'a> {
    kv: &'a Kv,
    key: Vec<u8>,
    value: Result<Vec<u8>, KvError>,
    expiration: wit::Expiration,
    metadata: Result<Option<String>, KvError>,
    condition: wit::Condition,
}

impl<'a> Put<'a> {
    fn new(kv: &'a Kv, key: Vec<u8>, value: Result<Vec<u8>, KvError>) -> Put<'a> {
        Put {
            kv,
            key,
            value,
            expiration: wit::Expiration::Never,
            metadata: Ok(None),
            condition: wit::Condition::Always,
        }
    }

    /// Expires at this Unix time, in seconds.
    pub fn expiration(mut self, unix_seconds: u64) -> Self {
        self.expiration = wit::Expiration::At(unix_seconds);
        self
    }

    /// Expires this many seconds from now.
    pub fn expiration_ttl(mut self, seconds: u64) -> Self {
        self.expiration = wit::Expiration::Ttl(seconds);
        self
    }

    /// Stores `metadata` (at most 1024 bytes once serialized as JSON).
    pub fn metadata<M: Serialize + ?Sized>(mut self, metadata: &M) -> Self {
        self.metadata = serde_json::to_string(metadata)
            .map(Some)
            .map_err(|e| KvError::InvalidMetadata(e.to_string()));
        self
    }

    /// Writes only if the key holds no live entry.
    pub fn if_absent(mut self) -> Self {
        self.condition = wit::Condition::IfAbsent;
        self
    }

    /// Writes only if the entry's generation is still `generation`.
    pub fn if_generation(mut self, generation: u64) -> Self {
        self.condition = wit::Condition::IfGeneration(generation);
        self
    }

    /// Writes; the entry's new generation.
    pub fn execute(self) -> Result<u64, KvError> {
        let options = wit::PutOptions {
            expiration: self.expiration,
            metadata: self.metadata?,
            condition: self.condition,
        };
        Ok(self.kv.bucket.put(&self.key, &self.value?, &options)?)
    }
}

/// A key as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key {
    /// The key (bytes that are not UTF-8 are replaced).
    pub name: String,
    /// When it expires, Unix seconds.
    pub expiration: Option<u64>,
    /// The metadata, as JSON text.
    pub metadata: Option<String>,
}

/// One page of a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListPage {
    /// The keys of this page, in order.
    pub keys: Vec<Key>,
    /// Give to [`List::cursor`] for the next page; `None` when complete.
    pub cursor: Option<String>,
}

/// A listing in progress; see [`Kv::list`]. Nothing is read until
/// [`List::page`] or [`List::keys`].
#[must_use = "nothing is read until `.page()` or `.keys()` is called"]
pub struct List {
    kv: Kv,
    prefix: Vec<u8>,
    limit: Option<u32>,
    cursor: Option<String>,
}

impl List {
    /// Only keys starting with `prefix`.
    pub fn prefix(mut self, prefix: impl AsRef<[u8]>) -> Self {
        self.prefix = prefix.as_ref().to_vec();
        self
    }

    /// At most `limit` keys per page (1 to 1000; 1000 by default).
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Continue after the page that returned `cursor`.
    pub fn cursor(mut self, cursor: impl Into<String>) -> Self {
        self.cursor = Some(cursor.into());
        self
    }

    /// One page.
    pub fn page(&self) -> Result<ListPage, KvError> {
        let page = self.kv.bucket.list_keys(&wit::ListOptions {
            prefix: self.prefix.clone(),
            limit: self.limit,
            cursor: self.cursor.clone(),
        })?;
        Ok(ListPage {
            keys: page
                .keys
                .into_iter()
                .map(|k| Key {
                    name: String::from_utf8_lossy(&k.name).into_owned(),
                    expiration: k.expiration,
                    metadata: k.metadata,
                })
                .collect(),
            cursor: if page.list_complete {
                None
            } else {
                page.cursor
            },
        })
    }

    /// Every key, fetching page after page as the iterator advances.
    pub fn keys(self) -> Keys {
        Keys {
            list: self,
            page: Vec::new().into_iter(),
            done: false,
        }
    }
}

/// Iterator over every key of a listing; see [`List::keys`].
pub struct Keys {
    list: List,
    page: std::vec::IntoIter<Key>,
    done: bool,
}

impl Iterator for Keys {
    type Item = Result<Key, KvError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(key) = self.page.next() {
                return Some(Ok(key));
            }
            if self.done {
                return None;
            }
            match self.list.page() {
                Ok(page) => {
                    self.done = page.cursor.is_none();
                    self.list.cursor = page.cursor;
                    self.page = page.keys.into_iter();
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(value: &str, metadata: Option<&str>) -> Entry {
        Entry {
            value: value.as_bytes().to_vec(),
            metadata: metadata.map(String::from),
            expiration: None,
            generation: 7,
        }
    }

    #[test]
    fn entries_decode_as_text_json_and_metadata() {
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct Meta {
            owner: String,
        }
        let e = entry(r#"{"n":1}"#, Some(r#"{"owner":"ada"}"#));
        assert_eq!(e.text(), Ok(r#"{"n":1}"#));
        assert_eq!(e.json::<serde_json::Value>().unwrap()["n"], 1);
        assert_eq!(
            e.metadata::<Meta>(),
            Ok(Some(Meta {
                owner: "ada".into()
            }))
        );
        assert_eq!(entry("x", None).metadata::<Meta>(), Ok(None));
        assert!(matches!(
            entry("not json", None).json::<u32>(),
            Err(KvError::Decode(_))
        ));
        let binary = Entry {
            value: vec![0xff, 0xfe],
            ..entry("", None)
        };
        assert!(matches!(binary.text(), Err(KvError::Decode(_))));
    }

    #[test]
    fn kv_errors_become_fitting_responses() {
        let status = |e: KvError| Error::from(e).status().as_u16();
        assert_eq!(status(KvError::ConditionFailed), 412);
        assert_eq!(status(KvError::Unavailable("down".into())), 503);
        assert_eq!(status(KvError::NotBound("TODOS".into())), 500);
        assert_eq!(status(KvError::ValueTooLarge(1 << 30)), 500);
        // The store's reason stays out of the client's message.
        let error = Error::from(KvError::Unavailable("pg at 10.0.0.5 refused".into()));
        assert!(!error.message().contains("10.0.0.5"));
        assert!(error.detail().unwrap().contains("10.0.0.5"));
    }

    #[test]
    fn wit_errors_say_what_is_wrong() {
        let text = |e: wit::Error| KvError::from(e).to_string();
        assert_eq!(
            text(wit::Error::KeyTooLong(600)),
            "invalid key: 600 bytes, over the 512-byte limit"
        );
        assert!(
            text(wit::Error::NamespaceNotBound("TODOS".into()))
                .contains("[[kv_namespaces]] binding = \"TODOS\"")
        );
        assert_eq!(
            text(wit::Error::ConditionFailed),
            "the entry changed (condition failed)"
        );
    }
}
