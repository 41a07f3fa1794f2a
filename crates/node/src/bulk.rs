//! KV bulk writes as the admin API takes them, for the node and for the
//! CLI's local store alike.

use base64::Engine as _;
use bytes::Bytes;
use verge_api::BulkPair;
use verge_kv::{BulkWrite, Expiration, PutOptions};

/// The write a bulk pair asks for; the error says what is wrong with it.
pub fn bulk_write(pair: BulkPair) -> Result<BulkWrite, String> {
    let value = if pair.base64 {
        base64::engine::general_purpose::STANDARD
            .decode(&pair.value)
            .map_err(|e| format!("`{}`: value is not base64: {e}", pair.key))?
    } else {
        pair.value.into_bytes()
    };
    Ok(BulkWrite::Put {
        key: pair.key.into_bytes(),
        value: Bytes::from(value),
        options: PutOptions {
            expiration: Expiration::from_ttl_or_at(pair.expiration_ttl, pair.expiration),
            metadata: pair.metadata.map(|m| m.to_string()),
            ..PutOptions::default()
        },
    })
}
