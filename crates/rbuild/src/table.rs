//! Output helpers of the store subcommands: docker's table layout (a tabwriter with minimum
//! width 10 and padding 3), go-units sizes and durations, docker's time format, writing to
//! stdout where a closed pipe ends quietly, and the mapping of image-store errors to reports.

use crate::errors::Report;
use rbuild_build::images::{civil_from_unix, ImageError};
use std::io::Write;

/// Lays out rows as docker's tabwriter does: every column but the last padded to its widest
/// cell plus 3 (at least 10).
pub fn render(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; cols];
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < row.len() {
                let width = (widths[i] + 3).max(10);
                line.extend(std::iter::repeat_n(' ', width - cell.chars().count()));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Writes `text` to stdout; a reader that went away (`| head`) is not an error.
pub fn print(text: &str) -> Result<(), Report> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(()),
        // A reader that went away: end quietly with SIGPIPE's status, as docker does.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            std::process::exit(crate::pipe::SIGPIPE_STATUS)
        }
        Err(e) => Err(Report::new(format!(
            "error: writing to standard output: {e}"
        ))),
    }
}

/// go-units `HumanSizeWithPrecision(size, 3)`: decimal units, 3 significant digits (`7.34MB`),
/// as `docker images` prints sizes.
pub fn human_size(size: u64) -> String {
    human_size_with_precision(size, 3)
}

/// go-units `HumanSize`: 4 significant digits (`12.35MB`), as `docker builder prune` and
/// `docker system df` print sizes.
pub fn human_size4(size: u64) -> String {
    human_size_with_precision(size, 4)
}

/// go-units `HumanSizeWithPrecision(size, precision)`: decimal units, `%.{precision}g`.
fn human_size_with_precision(size: u64, precision: i32) -> String {
    const UNITS: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
    let mut v = size as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    format!("{}{}", format_g(v, precision), UNITS[unit])
}

/// Go's `%.{precision}g` for a non-negative number below 1000 (as go-units leaves it).
fn format_g(v: f64, precision: i32) -> String {
    if v == 0.0 {
        return "0".into();
    }
    // Round to `precision` significant digits first: that decides the exponent
    // (999.9 -> 1e+03 at 3 digits).
    let exp = v.log10().floor() as i32;
    let scale = 10f64.powi(precision - 1 - exp);
    let rounded = (v * scale).round() / scale;
    let exp = rounded.log10().floor() as i32;
    if exp >= precision {
        let mantissa = rounded / 10f64.powi(exp);
        let decimals = (precision - 1) as usize;
        return format!("{}e+{:02}", trim(format!("{mantissa:.decimals$}")), exp);
    }
    let decimals = (precision - 1 - exp).max(0) as usize;
    trim(format!("{rounded:.decimals$}"))
}

fn trim(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// go-units `HumanDuration` + " ago", docker's CREATED column; `N/A` without a time.
pub fn since(created: Option<i64>) -> String {
    let Some(t) = created else {
        return "N/A".into();
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    format!("{} ago", human_duration(now - t))
}

/// go-units `HumanDuration` of `seconds`.
pub fn human_duration(seconds: i64) -> String {
    let hours = (seconds as f64 / 3600.0).round() as i64;
    match seconds {
        s if s < 1 => "Less than a second".into(),
        1 => "1 second".into(),
        s if s < 60 => format!("{s} seconds"),
        s if s / 60 == 1 => "About a minute".into(),
        s if s / 60 < 60 => format!("{} minutes", s / 60),
        _ if hours == 1 => "About an hour".into(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        s => format!("{} years", s / 3600 / 24 / 365),
    }
}

/// Go's `time.Time.String()` in UTC: `2024-01-02 03:04:05 +0000 UTC` (docker's CreatedAt).
pub fn go_time(created: Option<i64>) -> String {
    let (y, mo, d, h, mi, s) = civil_from_unix(created.unwrap_or(-62135596800));
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02} +0000 UTC")
}

/// The report of an image-store error, in docker's words.
pub fn report(err: ImageError) -> Report {
    match err {
        ImageError::Store(e) => Report::from_error("image store", &e),
        e @ ImageError::InvalidReference { .. } => {
            Report::new(format!("Error parsing reference: {e}"))
        }
        e => Report::new(format!("Error response from daemon: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_go_units() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(123), "123B");
        assert_eq!(human_size(1234), "1.23kB");
        assert_eq!(human_size(7_340_032), "7.34MB");
        assert_eq!(human_size(7_000_000), "7MB");
        assert_eq!(human_size(10_500), "10.5kB");
        assert_eq!(human_size(999_999), "1e+03kB");
        assert_eq!(human_size(1_500_000_000), "1.5GB");
    }

    #[test]
    fn durations_read_as_go_units() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(1), "1 second");
        assert_eq!(human_duration(59), "59 seconds");
        assert_eq!(human_duration(61), "About a minute");
        assert_eq!(human_duration(600), "10 minutes");
        assert_eq!(human_duration(3600), "About an hour");
        assert_eq!(human_duration(7200), "2 hours");
        assert_eq!(human_duration(3 * 86400), "3 days");
        assert_eq!(human_duration(20 * 86400), "2 weeks");
        assert_eq!(human_duration(90 * 86400), "3 months");
        assert_eq!(human_duration(56 * 365 * 86400), "56 years");
        assert_eq!(go_time(Some(0)), "1970-01-01 00:00:00 +0000 UTC");
    }

    #[test]
    fn tables_pad_like_docker() {
        let t = render(&[
            vec!["REPOSITORY".into(), "TAG".into(), "SIZE".into()],
            vec!["app".into(), "1".into(), "7MB".into()],
        ]);
        assert_eq!(
            t,
            "REPOSITORY   TAG       SIZE\napp          1         7MB\n"
        );
    }
}
