//! Byte sizes as operators write them: `1048576`, `512KiB`, `50GiB`, `2GB`.
//!
//! Binary units (`KiB`, `MiB`, `GiB`, `TiB`) are powers of 1024, decimal
//! ones (`kB`/`KB`, `MB`, `GB`, `TB`) powers of 1000, as `du --si` and disk
//! vendors count; a bare number is bytes.

/// Parses a size; the error says what was expected.
pub fn parse(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "TiB" | "T" => 1 << 40,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        other => {
            return Err(format!(
            "{text:?}: unknown unit {other:?}; use bytes or B, KiB, MiB, GiB, TiB, KB, MB, GB, TB"
        ))
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size like 1048576, 512MiB or 50GiB"))?;
    let bytes = value * multiplier as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("{text:?} is out of range"));
    }
    Ok(bytes.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse("1048576"), Ok(1 << 20));
        assert_eq!(parse("10MiB"), Ok(10 << 20));
        assert_eq!(parse("50 GiB"), Ok(50 << 30));
        assert_eq!(parse("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse("2GB"), Ok(2_000_000_000));
        assert_eq!(parse("512K"), Ok(512 << 10));
        assert!(parse("10 parsecs").unwrap_err().contains("unknown unit"));
        assert!(parse("GiB").unwrap_err().contains("not a size"));
        assert!(parse("-1").is_err());
    }
}
