//! Durations as written in the configuration: an integer and a unit, e.g. `500ms`,
//! `10s`, `5m`, `2h`, `30d`; several may be concatenated (`1m30s`).

use std::time::Duration;

const UNITS: &[(&str, u64)] = &[
    ("ms", 1),
    ("s", 1_000),
    ("m", 60_000),
    ("h", 3_600_000),
    ("d", 86_400_000),
];

/// Parses a configuration duration. The error is a phrase to follow the value.
pub(crate) fn parse(text: &str) -> Result<Duration, &'static str> {
    const SYNTAX: &str =
        "is not a duration (use a number and a unit: ms, s, m, h or d, e.g. \"10s\")";
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(SYNTAX);
    }
    let mut total_ms: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(SYNTAX);
        }
        let (number, tail) = rest.split_at(digits);
        let letters = tail.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, tail) = tail.split_at(letters);
        let factor = UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|&(_, f)| f)
            .ok_or(SYNTAX)?;
        let n: u64 = number.parse().map_err(|_| "is too large")?;
        total_ms = n
            .checked_mul(factor)
            .and_then(|ms| total_ms.checked_add(ms))
            .ok_or("is too large")?;
        rest = tail;
    }
    Ok(Duration::from_millis(total_ms))
}

/// Formats a duration in the largest unit that represents it exactly (`parse`'s
/// inverse for whole milliseconds).
pub(crate) fn format(d: Duration) -> String {
    let ms = d.as_millis();
    for &(name, factor) in UNITS.iter().rev() {
        let factor = u128::from(factor);
        if ms != 0 && ms.is_multiple_of(factor) {
            return format!("{}{name}", ms / factor);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_compounds() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse(" 5m "), Ok(Duration::from_secs(300)));
        assert_eq!(parse("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
        for bad in [
            "",
            "10",
            "s",
            "10 s",
            "1.5s",
            "-1s",
            "10sec",
            "1w",
            "99999999999999999999s",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formats_in_the_largest_exact_unit() {
        for (d, s) in [
            (Duration::from_millis(500), "500ms"),
            (Duration::from_secs(10), "10s"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_secs(300), "5m"),
            (Duration::from_secs(30 * 86_400), "30d"),
            (Duration::ZERO, "0ms"),
        ] {
            assert_eq!(format(d), s);
            assert_eq!(parse(s), Ok(d));
        }
    }
}
