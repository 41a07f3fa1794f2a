//! Cron schedules of a worker's triggers (`[triggers] crons`).
//!
//! Five fields (minute, hour, day of month, month, day of week) as in
//! crontab and Workers, or six with seconds first. Times are UTC.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds};

/// Schedules a worker may declare at most.
pub const MAX_CRONS: usize = 10;

/// 2000-01-01T00:00:00Z, where the check that a schedule fires at all
/// starts (any fixed day does: the answer does not depend on it).
const NEVER_CHECK_FROM_MS: u64 = 946_684_800_000;

/// A parsed cron expression, kept with the text it was written as (which
/// names it in runs, logs and the admin API).
#[derive(Clone, Debug)]
pub struct Schedule {
    text: String,
    cron: Cron,
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Schedule) -> bool {
        self.text == other.text
    }
}

impl Schedule {
    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The first tick strictly after `after_ms` (Unix milliseconds).
    pub fn next_after(&self, after_ms: u64) -> Option<u64> {
        let after: DateTime<Utc> = Utc.timestamp_millis_opt(after_ms as i64).single()?;
        let next = self.cron.find_next_occurrence(&after, false).ok()?;
        u64::try_from(next.timestamp_millis()).ok()
    }
}

impl FromStr for Schedule {
    type Err = String;

    fn from_str(text: &str) -> Result<Schedule, String> {
        let text = text.trim();
        let fields = text.split_whitespace().count();
        if !(5..=6).contains(&fields) {
            return Err(format!(
                "{fields} fields; a schedule has 5 (minute hour day month weekday) \
                 or 6 (with seconds first)"
            ));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(text)
            .map_err(|e| e.to_string())?;
        let schedule = Schedule {
            text: text.split_whitespace().collect::<Vec<_>>().join(" "),
            cron,
        };
        // A schedule with no year field that fires once fires again within
        // 28 years (the calendar repeats): one that has no tick after a
        // fixed day never fires at all (`0 0 30 2 *`). Found once here, at
        // load and deploy, instead of by a node looking for it every tick.
        if schedule.next_after(NEVER_CHECK_FROM_MS).is_none() {
            return Err(
                "it never fires (no such date: check the day of month against the month)"
                    .to_string(),
            );
        }
        Ok(schedule)
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_and_six_field_schedules_tick_in_utc() {
        let every_five: Schedule = "*/5 * * * *".parse().unwrap();
        // 2026-11-29T10:02:30Z
        let at = 1_796_032_950_000;
        assert_eq!(every_five.next_after(at), Some(1_796_033_100_000));
        let every_second: Schedule = "* * * * * *".parse().unwrap();
        assert_eq!(every_second.next_after(at), Some(at + 1000));
        assert_eq!(every_second.next_after(at + 1), Some(at + 1000));
        let daily: Schedule = "0  3 * * *".parse().unwrap();
        assert_eq!(daily.as_str(), "0 3 * * *");
    }

    #[test]
    fn bad_schedules_say_why() {
        assert!(
            "* * *"
                .parse::<Schedule>()
                .unwrap_err()
                .contains("3 fields")
        );
        assert!("61 * * * *".parse::<Schedule>().is_err());
        for never in ["0 0 30 2 *", "0 0 31 4 *", "0 0 0 31 11 *"] {
            let e = never.parse::<Schedule>().unwrap_err();
            assert!(e.contains("never fires"), "{never}: {e}");
        }
        // Rare is not never: the 29th of February comes every four years.
        let leap: Schedule = "0 0 29 2 *".parse().unwrap();
        // 2026-11-29T10:02:30Z -> 2028-02-29T00:00:00Z
        assert_eq!(leap.next_after(1_796_032_950_000), Some(1_835_395_200_000));
        assert!("* * * * * * * *".parse::<Schedule>().is_err());
    }
}
