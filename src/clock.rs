//! Wall-clock time, read by the IO shell. `ferry-proto` never reads a clock: the
//! shell passes the time in.

use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock Unix milliseconds (0 if the clock is before 1970).
pub fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
