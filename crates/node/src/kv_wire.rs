//! Verge KV in the admin API's wire types, for the node and for the CLI's
//! local store alike: bulk pairs to writes, list pages to their JSON.

use base64::Engine as _;
use bytes::Bytes;
use verge_api::{BulkPair, KeyInfo, KeyPage};
use verge_kv::{BulkWrite, Expiration, ListPage, PutOptions};

/// A page of a listing as the admin API answers it (metadata that is not
/// JSON is left out).
pub fn key_page(page: ListPage) -> KeyPage {
    let keys = page
        .keys
        .into_iter()
        .map(|k| KeyInfo {
            name: String::from_utf8_lossy(&k.name).into_owned(),
            expiration: k.expiration,
            metadata: k
                .metadata
                .as_deref()
                .and_then(|m| serde_json::from_str(m).ok()),
        })
        .collect();
    KeyPage {
        keys,
        cursor: page.cursor,
        list_complete: page.list_complete,
    }
}

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
