//! Durations on the command line: a whole number and a unit, `500ms`, `30s`, `10m`, `1h`
//! (also `2d`). No fractions, no bare numbers (a TTL of "30" is ambiguous), nothing above
//! a year; the server checks its own limit too.

use std::time::Duration;

const YEAR_MS: u64 = 366 * 24 * 3600 * 1000;

/// Parses `text` (clap value parser).
pub fn parse(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a duration: use e.g. 500ms, 30s, 10m, 1h"))?;
    let unit_ms: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "" => {
            return Err(format!(
                "{text:?} needs a unit: ms, s, m, h or d (e.g. 30s)"
            ));
        }
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?}: use ms, s, m, h or d"
            ));
        }
    };
    match n.checked_mul(unit_ms) {
        Some(0) => Err(format!("{text:?}: a duration must be positive")),
        Some(ms) if ms <= YEAR_MS => Ok(Duration::from_millis(ms)),
        _ => Err(format!("{text:?} is longer than a year")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_refusals() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        for bad in [
            "30",
            "1.5s",
            "s",
            "-1s",
            "0s",
            "10y",
            "400d",
            "99999999999999999999ms",
        ] {
            assert!(parse(bad).is_err(), "{bad} accepted");
        }
    }
}
