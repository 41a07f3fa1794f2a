//! The conformance harness every KV backend's tests run: a plain in-memory
//! [`Model`] of Verge KV's semantics, random operation sequences, and
//! [`agree`], which applies a sequence to a real store through
//! [`Namespace`] and to the model, and fails on the first difference
//! (values, generations, expirations under a manual clock, list pages and
//! cursors). Built with the `conformance` feature, for tests only.

mod model;

use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;

pub use model::Model;

use crate::{
    Condition, Expiration, KvStore, ListOptions, ManualClock, Namespace, PutOptions, WriteOutcome,
};

/// One step of a test sequence.
#[derive(Clone, Debug)]
pub enum Op {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        ttl: Option<u64>,
        metadata: bool,
        condition: Condition,
    },
    Get {
        key: Vec<u8>,
    },
    Delete {
        key: Vec<u8>,
    },
    Increment {
        key: Vec<u8>,
        delta: i64,
    },
    ListAll {
        prefix: Vec<u8>,
        limit: u32,
    },
    Advance {
        seconds: u64,
    },
}

/// Keys over a small alphabet with both extreme bytes, so prefixes, byte
/// order and collisions all happen often.
fn key() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(vec![b'a', b'b', 0x00, 0xff]), 1..4)
}

/// A random step.
pub fn op() -> impl Strategy<Value = Op> {
    let condition = prop_oneof![
        3 => Just(Condition::Always),
        1 => Just(Condition::IfAbsent),
        1 => (0u64..12).prop_map(Condition::IfGeneration),
    ];
    let value = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..8),
        (-5i64..5).prop_map(|n| n.to_string().into_bytes()),
        // Above the inline threshold, so the blob table is exercised.
        Just(vec![7u8; 5000]),
    ];
    prop_oneof![
        4 => (key(), value, prop::option::of(1u64..6), any::<bool>(), condition)
            .prop_map(|(key, value, ttl, metadata, condition)| Op::Put { key, value, ttl, metadata, condition }),
        3 => key().prop_map(|key| Op::Get { key }),
        1 => key().prop_map(|key| Op::Delete { key }),
        2 => (key(), -3i64..4).prop_map(|(key, delta)| Op::Increment { key, delta }),
        2 => (prop::collection::vec(prop::sample::select(vec![b'a', 0xff]), 0..2), 1u32..4)
            .prop_map(|(prefix, limit)| Op::ListAll { prefix, limit }),
        1 => (1u64..4).prop_map(|seconds| Op::Advance { seconds }),
    ]
}

/// Sequences of 1 to 40 steps.
pub fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op(), 1..40)
}

/// Expirations are bounded by [`crate::MAX_EXPIRATION`]: the latest one is
/// kept and read back; one second more, or a TTL reaching past it (up to
/// `u64::MAX`, which a cast to a signed number would make negative), is
/// refused with the reason, in a put and in a bulk, and writes nothing.
/// `store` is fresh; `clock` drives it.
pub async fn expirations_are_bounded(store: Arc<dyn KvStore>, clock: ManualClock) {
    use crate::{BulkWrite, KvError, MAX_EXPIRATION};
    store.create_namespace("bounds").await.unwrap();
    let ns = Namespace::new(store, "bounds", Arc::new(clock.clone()));
    let now = crate::Clock::now(&clock);
    let put = |expiration| PutOptions {
        expiration,
        ..PutOptions::default()
    };
    let value = || Bytes::from_static(b"v");
    ns.put(b"latest", value(), put(Expiration::At(MAX_EXPIRATION)))
        .await
        .unwrap();
    let kept = ns
        .get(b"latest")
        .await
        .unwrap()
        .expect("the latest expiration is kept");
    assert_eq!(kept.expiration, Some(MAX_EXPIRATION));
    ns.put(
        b"longest",
        value(),
        put(Expiration::Ttl(MAX_EXPIRATION - now)),
    )
    .await
    .unwrap();
    assert_eq!(
        ns.get(b"longest").await.unwrap().map(|e| e.expiration),
        Some(Some(MAX_EXPIRATION))
    );
    for expiration in [
        Expiration::At(MAX_EXPIRATION + 1),
        Expiration::At(1 << 63),
        Expiration::At(u64::MAX),
        Expiration::Ttl(MAX_EXPIRATION - now + 1),
        Expiration::Ttl(u64::MAX),
    ] {
        let refused = ns.put(b"far", value(), put(expiration)).await;
        assert!(
            matches!(&refused, Err(KvError::BadExpiration(why)) if why.contains("9999-12-31")),
            "{expiration:?}: {refused:?}"
        );
        let bulk = ns
            .bulk(vec![
                BulkWrite::Put {
                    key: b"near".to_vec(),
                    value: value(),
                    options: PutOptions::default(),
                },
                BulkWrite::Put {
                    key: b"far".to_vec(),
                    value: value(),
                    options: put(expiration),
                },
            ])
            .await;
        assert!(
            matches!(bulk, Err(KvError::BadExpiration(_))),
            "{expiration:?}: {bulk:?}"
        );
    }
    assert_eq!(ns.get(b"far").await.unwrap(), None);
    assert_eq!(
        ns.get(b"near").await.unwrap(),
        None,
        "a refused bulk writes nothing"
    );
}

/// Applies `ops` to `store` (fresh, driven by `clock`) and to the model;
/// the first disagreement fails the test case.
pub async fn agree(
    store: Arc<dyn KvStore>,
    clock: ManualClock,
    ops: Vec<Op>,
) -> Result<(), TestCaseError> {
    store.create_namespace("ns").await.unwrap();
    let ns = Namespace::new(store, "ns", Arc::new(clock.clone()));
    let mut model = model::Model::default();
    for op in ops {
        let now = crate::Clock::now(&clock);
        match op {
            Op::Put {
                key,
                value,
                ttl,
                metadata,
                condition,
            } => {
                let metadata = metadata.then(|| format!("{{\"len\":{}}}", value.len()));
                let options = PutOptions {
                    expiration: ttl.map_or(Expiration::Never, Expiration::Ttl),
                    metadata: metadata.clone(),
                    condition,
                };
                let real = ns.put(&key, Bytes::from(value.clone()), options).await;
                let expected = model
                    .put(
                        &key,
                        Bytes::from(value),
                        metadata,
                        ttl.map(|t| now + t),
                        condition,
                        now,
                    )
                    .map(|o| match o {
                        WriteOutcome::Put { generation } => generation,
                        _ => unreachable!(),
                    });
                prop_assert_eq!(real, expected);
            }
            Op::Get { key } => {
                prop_assert_eq!(ns.get(&key).await.unwrap(), model.get(&key, now))
            }
            Op::Delete { key } => {
                prop_assert_eq!(
                    ns.delete(&key).await.map(WriteOutcome::Deleted),
                    Ok(model.delete(&key, now))
                );
            }
            Op::Increment { key, delta } => {
                let expected = model.increment(&key, delta, now).map(|o| match o {
                    WriteOutcome::Incremented { value, .. } => value,
                    _ => unreachable!(),
                });
                prop_assert_eq!(ns.increment(&key, delta).await, expected);
            }
            Op::ListAll { prefix, limit } => {
                // Page through everything, comparing page by page.
                let mut cursor: Option<String> = None;
                let mut after: Option<Vec<u8>> = None;
                loop {
                    let options = ListOptions {
                        prefix: prefix.clone(),
                        limit: Some(limit),
                        cursor: cursor.clone(),
                    };
                    let real = ns.list(&options).await.unwrap();
                    let expected = model.list(&prefix, after.as_deref(), limit, now);
                    prop_assert_eq!(&real, &expected);
                    if real.list_complete {
                        break;
                    }
                    after = real.keys.last().map(|k| k.name.clone());
                    cursor = real.cursor;
                }
            }
            Op::Advance { seconds } => clock.advance(seconds),
        }
    }
    Ok(())
}
