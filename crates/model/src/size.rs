//! Memory sizes as people and spark-submit write them: `512m`, `4g`, `1.5g`, `2048`
//! (a bare number means MiB, as in Spark).

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SizeError {
    pub input: String,
}

impl fmt::Display for SizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` is not a memory size: write a number with a unit k, m, g or t, e.g. 512m or 4g",
            self.input
        )
    }
}

/// Parses a size into MiB, rounding up (`1536k` is 2 MiB). Zero is refused: no job can run
/// in no memory.
pub fn parse_mib(input: &str) -> Result<u64, SizeError> {
    let err = || SizeError {
        input: input.to_string(),
    };
    let s = input.trim().to_ascii_lowercase();
    let s = s
        .strip_suffix("ib")
        .or_else(|| s.strip_suffix('b'))
        .unwrap_or(&s);
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let kib_per_unit: f64 = match unit {
        "k" => 1.0,
        "" | "m" => 1024.0,
        "g" => 1024.0 * 1024.0,
        "t" => 1024.0 * 1024.0 * 1024.0,
        _ => return Err(err()),
    };
    if num.is_empty() || num.matches('.').count() > 1 {
        return Err(err());
    }
    let value: f64 = num.parse().map_err(|_| err())?;
    let mib = (value * kib_per_unit / 1024.0).ceil();
    if !(1.0..1e12).contains(&mib) {
        return Err(err());
    }
    Ok(mib as u64)
}

/// Formats MiB the way Spark accepts it back: whole GiB as `4g`, otherwise `1536m`.
pub fn format_mib(mib: u64) -> String {
    if mib > 0 && mib.is_multiple_of(1024) {
        format!("{}g", mib / 1024)
    } else {
        format!("{mib}m")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_spark_submit_accepts() {
        assert_eq!(parse_mib("512m"), Ok(512));
        assert_eq!(parse_mib("4g"), Ok(4096));
        assert_eq!(parse_mib("4G"), Ok(4096));
        assert_eq!(parse_mib("1.5g"), Ok(1536));
        assert_eq!(parse_mib("2048"), Ok(2048));
        assert_eq!(parse_mib("1536k"), Ok(2));
        assert_eq!(parse_mib("2GiB"), Ok(2048));
        assert_eq!(parse_mib("1t"), Ok(1024 * 1024));
    }

    #[test]
    fn refuses_nonsense_with_a_hint() {
        for bad in ["4x", "", "g", "0", "0m", "-1g", "1..2g", "1e9", "abc"] {
            let e = parse_mib(bad).expect_err(bad);
            assert!(e.to_string().contains("e.g. 512m or 4g"), "{e}");
        }
    }

    #[test]
    fn formats_round_trip() {
        for mib in [1, 512, 1024, 1536, 4096] {
            assert_eq!(parse_mib(&format_mib(mib)), Ok(mib));
        }
    }
}
