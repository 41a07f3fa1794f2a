//! The JSON bodies the admin API reads: any bytes decode into the wire
//! types or are refused, and what decodes encodes back to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::{Serialize, de::DeserializeOwned};

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(data: &[u8]) {
    if let Ok(value) = serde_json::from_slice::<T>(data) {
        let text = serde_json::to_vec(&value).unwrap();
        let again: T = serde_json::from_slice(&text).unwrap();
        assert_eq!(again, value);
    }
}

fuzz_target!(|data: &[u8]| {
    round_trip::<verge_api::NewVersion>(data);
    round_trip::<verge_api::Rollback>(data);
    round_trip::<verge_api::RunSchedule>(data);
    round_trip::<verge_api::SecretValue>(data);
    round_trip::<verge_api::NewNamespace>(data);
    round_trip::<Vec<verge_api::BulkPair>>(data);
    round_trip::<Vec<String>>(data);
});
