//! RFC 3339 timestamps (`2026-11-30T17:00:00.000Z`) to and from Unix milliseconds, for
//! Alertmanager's JSON, with the `time` crate.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// `ms` as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC, milliseconds always written).
pub fn format(ms: u64) -> String {
    let at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.millisecond()
    )
}

/// Unix milliseconds of an RFC 3339 date-time (any offset, any fraction: truncated to
/// milliseconds); `None` if it is not one or is before 1970.
pub fn parse(s: &str) -> Option<u64> {
    let at = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    u64::try_from(at.unix_timestamp_nanos() / 1_000_000).ok()
}
