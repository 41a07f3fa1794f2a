//! Log lines from a worker. Each goes to the request's log, under the
//! request it belongs to: `verge dev` prints it, a node's tail streams it.

use std::fmt;
use std::io::Write;

/// How much a line matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
        }
    }
}

/// Writes one line; use the macros ([`info!`](crate::info) ...) instead.
#[doc(hidden)]
pub fn write(level: Level, message: fmt::Arguments<'_>) {
    let line = format!("{} {message}\n", level.as_str());
    // Warnings and errors go to stderr, the rest to stdout, so the two
    // streams can be told apart in the log. A full log is not the
    // request's failure: the write result is ignored.
    let _ = if level >= Level::Warn {
        std::io::stderr().write_all(line.as_bytes())
    } else {
        std::io::stdout().write_all(line.as_bytes())
    };
}

/// Logs at debug level: `verge_sdk::debug!("cache miss for {key}")`.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Debug, format_args!($($arg)*)) };
}

/// Logs at info level: `verge_sdk::info!("created todo {id}")`.
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Info, format_args!($($arg)*)) };
}

/// Logs at warn level.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Warn, format_args!($($arg)*)) };
}

/// Logs at error level.
#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Error, format_args!($($arg)*)) };
}
