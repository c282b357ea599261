//! Byte sizes on the command line (`10GiB`, `512MiB`, `1G`, `1000000`) and
//! in human output.

/// Parses a byte size: a number (decimals allowed with a unit) followed by
/// an optional unit, case-insensitive, spaces between allowed.
///
/// - none or `B`: bytes
/// - `K`, `KiB`, `M`, `MiB`, `G`, `GiB`, `T`, `TiB`: powers of 1024
/// - `KB`, `MB`, `GB`, `TB`: powers of 1000
pub fn parse_size(input: &str) -> Result<u64, String> {
    let s = input.trim();
    if s.is_empty() {
        return Err("empty size (use e.g. 10GiB, 512MiB, 1G or a number of bytes)".into());
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = (&s[..split], s[split..].trim());
    if num.is_empty() {
        return Err(format!(
            "invalid size '{input}': it must start with a number (e.g. 10GiB, 512MiB, 1G)"
        ));
    }
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => {
            return Err(format!(
                "invalid size '{input}': unknown unit '{unit}' (use B, KiB, MiB, GiB, TiB, \
                 K, M, G, T, or KB, MB, GB, TB)"
            ))
        }
    };
    let too_big = || format!("invalid size '{input}': too large");
    if let Ok(n) = num.parse::<u64>() {
        return n.checked_mul(mult).ok_or_else(too_big);
    }
    if !num.contains('.') {
        return Err(too_big());
    }
    // A decimal like 1.5GiB: exact enough in f64 below 2^53, and rounded down.
    let bad = || format!("invalid size '{input}': '{num}' is not a number");
    if num.matches('.').count() > 1 || num.starts_with('.') || num.ends_with('.') {
        return Err(bad());
    }
    let f: f64 = num.parse().map_err(|_| bad())?;
    let bytes = f * mult as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(too_big());
    }
    Ok(bytes as u64)
}

/// A cache budget: a size greater than zero.
pub fn parse_cache_size(input: &str) -> Result<u64, String> {
    match parse_size(input)? {
        0 => Err("the cache size must be greater than zero".into()),
        n => Ok(n),
    }
}

/// `1536` → `1.5 KiB`; below 1 KiB, `N B`.
pub fn format_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if v >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0} {}", UNITS[i])
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse_size("10GiB"), Ok(10 << 30));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("1000000"), Ok(1_000_000));
        assert_eq!(parse_size("7b"), Ok(7));
        assert_eq!(parse_size("2 KiB"), Ok(2048));
        assert_eq!(parse_size("3KB"), Ok(3000));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_size("1TiB"), Ok(1 << 40));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size(" 0 "), Ok(0));
    }

    #[test]
    fn rejects_garbage_clearly() {
        for bad in [
            "",
            "GiB",
            "10XB",
            "1.2.3G",
            ".5G",
            "5.G",
            "-1G",
            "1e9",
            "99999999999999999999",
        ] {
            let e = parse_size(bad).unwrap_err();
            assert!(e.contains("size"), "{bad}: {e}");
        }
        assert!(parse_size("10XB")
            .unwrap_err()
            .contains("unknown unit 'XB'"));
        assert!(parse_size("20000000TiB").unwrap_err().contains("too large"));
        assert!(parse_cache_size("0").is_err());
        assert_eq!(parse_cache_size("1"), Ok(1));
    }

    #[test]
    fn formats() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(1023), "1023 B");
        assert_eq!(format_bytes(1536), "1.5 KiB");
        assert_eq!(format_bytes(10 << 30), "10 GiB");
        assert_eq!(format_bytes(150 << 20), "150 MiB");
    }
}
