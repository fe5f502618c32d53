//! Rotation periods as people write them: `90d`, `12h`, `1d`, `2w`, `30m`, `3600s`, or `off`.

use std::fmt;

const MINUTE: u64 = 60;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;
const WEEK: u64 = 7 * DAY;

/// A rotation setting: a period in seconds, or none (manual rotation only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rotation {
    /// Rotate automatically every this many seconds.
    Every(u64),
    /// Rotate only on demand.
    Off,
}

impl Rotation {
    /// The period in seconds, or `None` for [`Rotation::Off`] (the wire's "absent").
    #[must_use]
    pub const fn seconds(self) -> Option<u64> {
        match self {
            Self::Every(s) => Some(s),
            Self::Off => None,
        }
    }
}

/// Parses `N` followed by one unit `s`, `m`, `h`, `d` or `w` (`90d`, `12h`), or `off`/`none`.
/// A bare number is refused: `90` could mean days or seconds.
///
/// # Errors
/// A message naming what is accepted.
pub fn parse_rotation(text: &str) -> Result<Rotation, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("off") || text.eq_ignore_ascii_case("none") {
        return Ok(Rotation::Off);
    }
    parse_period(text).map(Rotation::Every)
}

/// Parses a period (`90d`, `12h`, …) into seconds; `off` is not a period.
///
/// # Errors
/// A message naming what is accepted.
pub fn parse_period(text: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "invalid period {text:?}: write a number and a unit, e.g. 90d, 12h, 2w (units: s, m, h, d, w)"
        )
    };
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let unit_seconds = match unit.to_ascii_lowercase().as_str() {
        "s" => 1,
        "m" => MINUTE,
        "h" => HOUR,
        "d" => DAY,
        "w" => WEEK,
        _ => return Err(bad()),
    };
    if n == 0 {
        return Err(format!("invalid period {text:?}: must be more than zero"));
    }
    n.checked_mul(unit_seconds)
        .ok_or_else(|| format!("invalid period {text:?}: too long"))
}

/// Shows seconds the way [`parse_period`] reads them, in the largest unit that divides evenly.
#[must_use]
pub fn format_period(seconds: u64) -> String {
    struct Period(u64);
    impl fmt::Display for Period {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            let s = self.0;
            for (unit, size) in [("w", WEEK), ("d", DAY), ("h", HOUR), ("m", MINUTE)] {
                if s >= size && s.is_multiple_of(size) {
                    return write!(f, "{}{unit}", s / size);
                }
            }
            write!(f, "{s}s")
        }
    }
    Period(seconds).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_in_every_unit() {
        assert_eq!(parse_period("90d"), Ok(90 * 86_400));
        assert_eq!(parse_period("12h"), Ok(12 * 3_600));
        assert_eq!(parse_period("1d"), Ok(86_400));
        assert_eq!(parse_period("2w"), Ok(14 * 86_400));
        assert_eq!(parse_period("30m"), Ok(1_800));
        assert_eq!(parse_period("3600s"), Ok(3_600));
        assert_eq!(parse_period(" 7D "), Ok(7 * 86_400));
    }

    #[test]
    fn off_turns_rotation_off() {
        assert_eq!(parse_rotation("off"), Ok(Rotation::Off));
        assert_eq!(parse_rotation("OFF"), Ok(Rotation::Off));
        assert_eq!(parse_rotation("none"), Ok(Rotation::Off));
        assert_eq!(parse_rotation("90d"), Ok(Rotation::Every(90 * 86_400)));
        assert_eq!(Rotation::Off.seconds(), None);
    }

    #[test]
    fn ambiguous_or_malformed_periods_are_refused() {
        for bad in [
            "",
            "90",
            "d",
            "1.5d",
            "-1d",
            "1y",
            "10 d",
            "0d",
            "1dd",
            "99999999999999999999d",
        ] {
            let err = parse_period(bad).unwrap_err();
            assert!(err.contains("period"), "{bad:?}: {err}");
        }
        assert!(
            parse_period("999999999999999w")
                .unwrap_err()
                .contains("too long")
        );
    }

    #[test]
    fn format_uses_the_largest_even_unit() {
        assert_eq!(format_period(90 * 86_400), "90d");
        assert_eq!(format_period(14 * 86_400), "2w");
        assert_eq!(format_period(3_600), "1h");
        assert_eq!(format_period(90), "90s");
        for text in ["90d", "12h", "2w", "45m", "61s"] {
            assert_eq!(format_period(parse_period(text).unwrap()), text);
        }
    }
}
