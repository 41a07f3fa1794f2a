//! A Verge node: many workers behind one data-plane address, routed by host
//! and route pattern, managed through the admin API.
//!
//! [`NodeConfig`] is the operator's configuration; [`Node`] holds the
//! runtime, the stores and the [`Registry`] of workers taking traffic, and
//! performs deploys, rollbacks and secret changes; [`serve`] runs the data
//! plane and the admin API until shutdown. The CLI's `verge serve` is a thin
//! layer over this crate; so is `verge dev`'s manifest handling ([`spec`]).

pub mod admin;
pub mod config;
mod kv_wire;
pub mod metrics;
mod node;
pub mod registry;
mod relay;
mod serve;
pub mod spec;
pub mod tail;

pub use config::{
    AdminToken, ConfigError, ConfigLayer, DEFAULT_KV_CACHE_MIB, NodeConfig, StoreConfig,
};
pub use kv_wire::{bulk_write, key_page};
pub use node::{
    DeployRequest, Deployed, Node, NodeError, SECRET_NAME_HELP, Stores, is_secret_name,
};
pub use registry::Registry;
pub use relay::{TailScope, TailWatch};
pub use serve::{Bound, bind, open_stores, serve, sqlite_stores};
