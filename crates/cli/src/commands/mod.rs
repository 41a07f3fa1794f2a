pub mod build;
pub mod dev;
pub mod kv;
pub mod new;
pub mod watch;
