pub mod dev;
pub mod kv;
