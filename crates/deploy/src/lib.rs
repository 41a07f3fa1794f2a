//! What a node knows about the workers deployed to it, as records a store
//! keeps: [`Version`]s (a component and the manifest it was deployed with,
//! content-addressed), the [`Deployment`] that says which versions take a
//! worker's traffic, the component bytes themselves, and secrets.
//!
//! [`DeployStore`] and [`SecretStore`] are what a storage backend implements;
//! this crate holds no storage and no runtime. Validation (does the component
//! compile, do its routes conflict) belongs to the node, which writes here
//! only what passed.

#[cfg(feature = "conformance")]
pub mod conformance;
mod cursor;
mod records;
mod store;

pub use cursor::{ChangeCursor, GAP_WAIT, Settled};
pub use records::{Canary, Deployment, Version, short_id, version_id};
pub use store::{
    CRON_RUNS_KEPT_MS, Change, ChangeFeed, CronRun, CronStore, DeployStore, RunOutcome,
    SecretStore, StoreError, Subject, TAIL_LEASE, TAIL_PAYLOAD_MAX, TailReceiver,
};
