//! A plain in-memory model of Verge KV's semantics, for property tests: what
//! the real store must agree with.

use std::collections::BTreeMap;

use crate::{Condition, Entry, KvError, ListKey, ListPage, WriteOutcome};
use bytes::Bytes;

#[derive(Default)]
pub struct Model {
    entries: BTreeMap<Vec<u8>, Entry>,
    generation: u64,
}

impl Model {
    fn live(&self, key: &[u8], now: u64) -> Option<&Entry> {
        self.entries
            .get(key)
            .filter(|e| e.expiration.is_none_or(|x| x > now))
    }

    pub fn get(&self, key: &[u8], now: u64) -> Option<Entry> {
        self.live(key, now).cloned()
    }

    pub fn put(
        &mut self,
        key: &[u8],
        value: Bytes,
        metadata: Option<String>,
        expiration: Option<u64>,
        condition: Condition,
        now: u64,
    ) -> Result<WriteOutcome, KvError> {
        let live = self.live(key, now).map(|e| e.generation);
        let allowed = match condition {
            Condition::Always => true,
            Condition::IfAbsent => live.is_none(),
            Condition::IfGeneration(g) => live == Some(g),
        };
        if !allowed {
            return Err(KvError::ConditionFailed);
        }
        self.generation += 1;
        let generation = self.generation;
        self.entries.insert(
            key.to_vec(),
            Entry {
                value,
                metadata,
                expiration,
                generation,
            },
        );
        Ok(WriteOutcome::Put { generation })
    }

    pub fn delete(&mut self, key: &[u8], now: u64) -> WriteOutcome {
        let existed = self.live(key, now).is_some();
        self.entries.remove(key);
        WriteOutcome::Deleted(existed)
    }

    pub fn increment(&mut self, key: &[u8], delta: i64, now: u64) -> Result<WriteOutcome, KvError> {
        let (old, metadata, expiration) = match self.live(key, now) {
            None => (0, None, None),
            Some(e) => match std::str::from_utf8(&e.value)
                .ok()
                .and_then(|t| t.trim().parse::<i64>().ok())
            {
                Some(n) => (n, e.metadata.clone(), e.expiration),
                None => {
                    return Err(KvError::NotAnInteger {
                        key: String::from_utf8_lossy(key).into_owned(),
                    });
                }
            },
        };
        let value = old.checked_add(delta).ok_or(KvError::Overflow)?;
        self.generation += 1;
        let generation = self.generation;
        let entry = Entry {
            value: Bytes::from(value.to_string()),
            metadata,
            expiration,
            generation,
        };
        self.entries.insert(key.to_vec(), entry);
        Ok(WriteOutcome::Incremented { value, generation })
    }

    pub fn list(&self, prefix: &[u8], after: Option<&[u8]>, limit: u32, now: u64) -> ListPage {
        let keys: Vec<ListKey> = self
            .entries
            .iter()
            .filter(|(k, e)| {
                k.starts_with(prefix)
                    && after.is_none_or(|a| k.as_slice() > a)
                    && e.expiration.is_none_or(|x| x > now)
            })
            .map(|(k, e)| ListKey {
                name: k.clone(),
                expiration: e.expiration,
                metadata: e.metadata.clone(),
            })
            .take(limit as usize + 1)
            .collect();
        ListPage::from_fetched(keys, limit)
    }
}
