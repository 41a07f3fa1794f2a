//! Per-request resource limits and the ceilings a node puts on them.

use std::fmt;
use std::time::Duration;

const MIB: u64 = 1024 * 1024;

/// The limits one request of a worker runs under.
///
/// The defaults are Cloudflare Workers' (50 ms of CPU, 30 s of wall time,
/// 128 MiB of linear memory) plus a 100 MiB cap on each body. A worker's
/// manifest may lower any of them; the node's ceilings bound how far it may
/// raise them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// CPU time the guest may spend on one request: time it runs, not time it
    /// waits on I/O or timers.
    pub cpu: Duration,
    /// Wall-clock time from the request's arrival to the end of its response.
    pub wall: Duration,
    /// Memory of one instance, in bytes: its linear memory plus the
    /// wasi:http objects its guest keeps in the host.
    pub memory: u64,
    /// Size of the request body and of the response body, each, in bytes.
    pub body: u64,
    /// Outbound HTTP requests (`wasi:http/outgoing-handler`) one request may
    /// make.
    pub subrequests: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            cpu: Duration::from_millis(50),
            wall: Duration::from_secs(30),
            memory: 128 * MIB,
            body: 100 * MIB,
            subrequests: 50,
        }
    }
}

impl Limits {
    /// The highest limits a node lets a manifest ask for unless its
    /// operator says otherwise: the defaults, with up to 1000 outbound
    /// requests.
    pub fn default_ceilings() -> Limits {
        Limits {
            subrequests: 1000,
            ..Limits::default()
        }
    }

    /// Limits given in the units people write them in (a manifest's
    /// `[limits]`, a node's `[ceilings]`), each over `base` where it is not
    /// given. Sizes saturate rather than wrap.
    pub fn from_units(units: &LimitUnits, base: Limits) -> Limits {
        Limits {
            cpu: units.cpu_ms.map_or(base.cpu, Duration::from_millis),
            wall: units.wall_ms.map_or(base.wall, Duration::from_millis),
            memory: units
                .memory_mib
                .map_or(base.memory, |m| m.saturating_mul(MIB)),
            body: units.body_mib.map_or(base.body, |m| m.saturating_mul(MIB)),
            subrequests: units.subrequests.unwrap_or(base.subrequests),
        }
    }
}

/// [`Limits`] as written in configuration: milliseconds, MiB and counts,
/// every one optional.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LimitUnits {
    /// CPU time per request, in milliseconds.
    pub cpu_ms: Option<u64>,
    /// Wall time per request, in milliseconds.
    pub wall_ms: Option<u64>,
    /// Memory per instance, in MiB.
    pub memory_mib: Option<u64>,
    /// Each body's size, in MiB.
    pub body_mib: Option<u64>,
    /// Outbound requests per request.
    pub subrequests: Option<u32>,
}

/// A limit asked for above what the node allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "limit `{name}` is {requested}, above this node's ceiling of {ceiling}; \
     lower it in verge.toml [limits] or raise the node's ceiling"
)]
pub struct LimitAboveCeiling {
    /// The manifest key of the limit (`cpu_ms`, `memory_mib` ...).
    pub name: &'static str,
    /// The value asked for, with its unit.
    pub requested: String,
    /// The node's ceiling, with its unit.
    pub ceiling: String,
}

impl Limits {
    /// Checks every limit against the node's `ceiling`, naming the first one
    /// that is above it.
    pub fn check_within(&self, ceiling: &Limits) -> Result<(), LimitAboveCeiling> {
        let checks = [
            (
                "cpu_ms",
                Amount::Millis(self.cpu),
                Amount::Millis(ceiling.cpu),
            ),
            (
                "wall_ms",
                Amount::Millis(self.wall),
                Amount::Millis(ceiling.wall),
            ),
            (
                "memory_mib",
                Amount::Bytes(self.memory),
                Amount::Bytes(ceiling.memory),
            ),
            (
                "body_mib",
                Amount::Bytes(self.body),
                Amount::Bytes(ceiling.body),
            ),
            (
                "subrequests",
                Amount::Count(self.subrequests.into()),
                Amount::Count(ceiling.subrequests.into()),
            ),
        ];
        for (name, requested, allowed) in checks {
            if requested > allowed {
                return Err(LimitAboveCeiling {
                    name,
                    requested: requested.to_string(),
                    ceiling: allowed.to_string(),
                });
            }
        }
        Ok(())
    }
}

/// A limit's value for comparisons and messages.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Amount {
    Millis(Duration),
    Bytes(u64),
    Count(u64),
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Amount::Millis(d) => write!(f, "{} ms", d.as_millis()),
            Amount::Bytes(b) if b % MIB == 0 => write!(f, "{} MiB", b / MIB),
            Amount::Bytes(b) => write!(f, "{b} bytes"),
            Amount::Count(n) => write!(f, "{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_within_themselves() {
        assert_eq!(Limits::default().check_within(&Limits::default()), Ok(()));
    }

    #[test]
    fn a_limit_above_the_ceiling_is_named() {
        let ceiling = Limits::default();
        let asked = Limits {
            memory: 256 * MIB,
            ..ceiling
        };
        let err = asked.check_within(&ceiling).unwrap_err();
        assert_eq!(err.name, "memory_mib");
        assert_eq!(err.requested, "256 MiB");
        assert_eq!(err.ceiling, "128 MiB");
        assert!(err.to_string().contains("lower it in verge.toml [limits]"));
    }

    #[test]
    fn units_fill_in_over_the_base() {
        let units = LimitUnits {
            cpu_ms: Some(10),
            memory_mib: Some(u64::MAX),
            ..LimitUnits::default()
        };
        let limits = Limits::from_units(&units, Limits::default_ceilings());
        assert_eq!(limits.cpu, Duration::from_millis(10));
        assert_eq!(limits.memory, u64::MAX);
        assert_eq!(limits.wall, Limits::default().wall);
        assert_eq!(limits.subrequests, 1000);
    }

    #[test]
    fn lower_limits_pass() {
        let ceiling = Limits::default();
        let asked = Limits {
            cpu: Duration::from_millis(10),
            ..ceiling
        };
        assert!(asked.check_within(&ceiling).is_ok());
    }
}
