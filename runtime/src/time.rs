//! Reading the engine's timestamps. Docker reports times as RFC 3339 strings
//! (`2025-05-01T12:34:56.123456789Z`) and uses `0001-01-01T00:00:00Z` for "never"; this turns
//! them into [`SystemTime`] or `None`. Pure, so it is table-tested without an engine.

use std::time::{Duration, SystemTime};

/// Parses an RFC 3339 timestamp (`Z` or `±hh:mm` offset, optional fraction). Times before
/// 1970 — Docker's "never" among them — and malformed strings give `None`.
pub(crate) fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let bytes = text.as_bytes();
    if bytes.len() < 20 || bytes[4] != b'-' || bytes[7] != b'-' || bytes[13] != b':' {
        return None;
    }
    if !matches!(bytes[10], b'T' | b't' | b' ') || bytes[16] != b':' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(range)?;
        part.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| part.parse().ok())
            .flatten()
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    let mut rest = &text[19..];
    let mut nanos: u32 = 0;
    if let Some(after_dot) = rest.strip_prefix('.') {
        let digits = after_dot.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        for (i, b) in after_dot.bytes().take(digits).enumerate() {
            if i < 9 {
                nanos = nanos * 10 + u32::from(b - b'0');
            }
        }
        for _ in digits..9 {
            nanos *= 10;
        }
        rest = &after_dot[digits..];
    }
    let offset_seconds = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            if rest.len() != 6 || rest.as_bytes()[3] != b':' {
                return None;
            }
            let hours: i64 = rest.get(1..3)?.parse().ok()?;
            let minutes: i64 = rest.get(4..6)?.parse().ok()?;
            sign * (hours * 3600 + minutes * 60)
        }
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_seconds;
    let seconds = u64::try_from(seconds).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::new(seconds, nanos))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_table() {
        let at = |secs: u64, nanos: u32| Some(SystemTime::UNIX_EPOCH + Duration::new(secs, nanos));
        let cases: &[(&str, Option<SystemTime>)] = &[
            ("1970-01-01T00:00:00Z", at(0, 0)),
            ("2000-03-01T00:00:00Z", at(951_868_800, 0)),
            ("2024-02-29T12:00:00Z", at(1_709_208_000, 0)),
            (
                "2025-05-01T12:34:56.123456789Z",
                at(1_746_102_896, 123_456_789),
            ),
            ("2025-05-01T12:34:56.5Z", at(1_746_102_896, 500_000_000)),
            (
                "2025-05-01T12:34:56.1234567891Z",
                at(1_746_102_896, 123_456_789),
            ),
            ("2025-05-01T14:34:56+02:00", at(1_746_102_896, 0)),
            ("2025-05-01T10:34:56-02:00", at(1_746_102_896, 0)),
            ("0001-01-01T00:00:00Z", None),
            ("", None),
            ("2025-05-01", None),
            ("2025-13-01T00:00:00Z", None),
            ("2025-05-01T24:00:00Z", None),
            ("2025-05-01T12:34:56", None),
            ("2025-05-01T12:34:56.Z", None),
            ("2025-05-01T12:34:56+0200", None),
            ("2025-05-01T12:34:5xZ", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_rfc3339(text), *expected, "{text}");
        }
    }
}
