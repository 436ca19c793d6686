//! Durations in settings, one parser for every binary (gsd-server,
//! gsd-client, gsd-lab): a number with a unit (`250ms`, `20s`, `1m`), at most
//! [`MAX_DURATION`].

use std::time::Duration;

/// Longest duration any option takes: beyond it a value is a mistake (and
/// deadline arithmetic would overflow).
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// A duration with a unit, at most [`MAX_DURATION`]; the error says what is
/// wrong in words a user can act on.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text.trim())
        .map_err(|e| format!("`{text}` is not a duration such as 500ms or 20s: {e}"))?;
    if d > MAX_DURATION {
        return Err(format!("`{text}` is over the 24h limit"));
    }
    Ok(d)
}

/// [`parse_duration`], and above zero.
pub fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        d if d.is_zero() => Err("must be larger than 0".into()),
        d => Ok(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_a_unit_and_stay_under_the_cap() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration(" 24h "), Ok(MAX_DURATION));
        for bad in ["", "20", "soon", "-1s", "25h", "1.5.2s", "9999999999999999999999s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(parse_positive_duration("0s").is_err());
        assert_eq!(parse_positive_duration("1ms"), Ok(Duration::from_millis(1)));
    }
}
