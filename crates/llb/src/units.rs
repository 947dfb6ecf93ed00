//! Docker's human sizes (go-units): [`ram_in_bytes`] (binary units, `64m` = 64 MiB; docker's
//! `--memory`, `--memory-swap`, `--shm-size` and BuildKit's tmpfs `size=`) and
//! [`from_human_size`] (the same grammar with decimal units, `64m` = 64 000 000).
//!
//! The grammar is go-units' size pattern: digits with an optional fraction, an optional space,
//! then an optional unit letter `k`, `m`, `g`, `t`, `p` (any case) followed by an optional `i`
//! and an optional `b` (`b` alone means bytes): `64m`, `1.5g`, `512MiB`, `100b`, `1024`. A
//! fraction is truncated to whole bytes, as Go's `int64(float64)`, computed exactly.

/// A size that does not read (docker's `invalid size: '64q'`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid size: '{0}'")]
pub struct InvalidSize(pub String);

/// A size with binary units (go-units `RAMInBytes`): `64m` = 64 × 2^20 bytes.
pub fn ram_in_bytes(s: &str) -> Result<u64, InvalidSize> {
    parse(s, 1024)
}

/// A size with decimal units (go-units `FromHumanSize`): `64m` = 64 × 10^6 bytes.
pub fn from_human_size(s: &str) -> Result<u64, InvalidSize> {
    parse(s, 1000)
}

/// Reads `s` with units that are powers of `base`.
fn parse(s: &str, base: u64) -> Result<u64, InvalidSize> {
    let bad = || InvalidSize(s.to_string());
    let number_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, rest) = s.split_at(number_end);
    let valid_number = !number.is_empty()
        && number.split('.').count() <= 2
        && number.split('.').all(|part| !part.is_empty())
        && number.as_bytes()[0].is_ascii_digit();
    if !valid_number {
        return Err(bad());
    }
    let rest = rest.strip_prefix(' ').unwrap_or(rest);
    let mut unit = rest.chars();
    let power = match unit.clone().next().map(|c| c.to_ascii_lowercase()) {
        None | Some('b') => 0,
        Some(c) => {
            let power = match c {
                'k' => 1,
                'm' => 2,
                'g' => 3,
                't' => 4,
                'p' => 5,
                _ => return Err(bad()),
            };
            unit.next();
            power
        }
    };
    // After the unit letter: optional `i`, optional `b`, nothing else.
    let tail: String = unit.collect::<String>().to_ascii_lowercase();
    if !matches!(tail.as_str(), "" | "i" | "b" | "ib") {
        return Err(bad());
    }
    let mut parts = number.split('.');
    let whole: u64 = parts.next().unwrap_or("0").parse().map_err(|_| bad())?;
    let frac = parts.next().unwrap_or("");
    let mult = base.pow(power);
    let mut bytes = whole.checked_mul(mult).ok_or_else(bad)?;
    if !frac.is_empty() {
        // The fraction's share of one unit, truncated.
        let digits: String = frac.chars().take(18).collect();
        let scale = 10u128.pow(digits.len() as u32);
        let value: u128 = digits.parse().map_err(|_| bad())?;
        let part = (value * u128::from(mult)) / scale;
        bytes = bytes
            .checked_add(u64::try_from(part).map_err(|_| bad())?)
            .ok_or_else(bad)?;
    }
    if bytes > i64::MAX as u64 {
        return Err(bad());
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_and_decimal_units() {
        let ok = |s: &str| ram_in_bytes(s).unwrap();
        assert_eq!(ok("1024"), 1024);
        assert_eq!(ok("100b"), 100);
        assert_eq!(ok("64m"), 64 << 20);
        assert_eq!(ok("64MB"), 64 << 20);
        assert_eq!(ok("64MiB"), 64 << 20);
        assert_eq!(ok("64 m"), 64 << 20);
        assert_eq!(ok("1.5g"), 3 << 29);
        assert_eq!(ok("0.5k"), 512);
        assert_eq!(ok("1GiB"), 1 << 30);
        assert_eq!(from_human_size("64m"), Ok(64_000_000));
        assert_eq!(from_human_size("1.5kB"), Ok(1500));
        for bad in [
            "",
            "m",
            "64q",
            "-1",
            ".5",
            "64mm",
            "64bib",
            "1.5.3",
            "99999999p",
        ] {
            assert_eq!(
                ram_in_bytes(bad).unwrap_err().to_string(),
                format!("invalid size: '{bad}'")
            );
        }
    }
}
