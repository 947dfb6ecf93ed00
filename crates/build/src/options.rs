//! Small derivations of a request: the build's `SOURCE_DATE_EPOCH` and the image's creation
//! time as RFC 3339.

use std::collections::BTreeMap;

/// `SOURCE_DATE_EPOCH` of a build, as BuildKit: the build arg of that name when given (ignored
/// if not an integer), else `fallback` (e.g. the environment's).
pub(crate) fn source_date_epoch(
    build_args: &BTreeMap<String, String>,
    fallback: Option<i64>,
) -> Option<i64> {
    match build_args.get("SOURCE_DATE_EPOCH") {
        Some(v) => v.trim().parse::<i64>().ok(),
        None => fallback,
    }
}

/// Formats Unix seconds as RFC 3339 UTC (`2024-01-02T03:04:05Z`). Hand-written over the one
/// civil-date conversion of [`crate::images::civil_from_unix`]: no crate in the dependency tree
/// formats RFC 3339 (`humantime` is not in `Cargo.lock`, `httpdate` writes HTTP dates).
pub(crate) fn rfc3339(secs: i64) -> String {
    let (year, month, day, hour, minute, second) = crate::images::civil_from_unix(secs);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn the_build_arg_wins_over_the_fallback() {
        let mut args = BTreeMap::new();
        assert_eq!(source_date_epoch(&args, Some(5)), Some(5));
        args.insert("SOURCE_DATE_EPOCH".to_string(), " 7 ".to_string());
        assert_eq!(source_date_epoch(&args, Some(5)), Some(7));
        args.insert("SOURCE_DATE_EPOCH".to_string(), "x".to_string());
        assert_eq!(source_date_epoch(&args, Some(5)), None);
    }
}
