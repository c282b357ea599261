//! Validation of entry names, shared by the mount and the server so both
//! reject exactly the same names.

/// Longest name in bytes, as on ext4.
pub const MAX_NAME_BYTES: usize = 255;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name is empty")]
    Empty,
    #[error("name \".\" or \"..\" is reserved")]
    Reserved,
    #[error("name contains '/'")]
    Slash,
    #[error("name contains a NUL byte")]
    Nul,
    #[error("name is longer than 255 bytes")]
    TooLong,
    #[error("name is not valid UTF-8")]
    NotUtf8,
}

/// Checks one path component. Names are stored as UTF-8 on the server;
/// bytes that are not UTF-8 are refused rather than mangled.
pub fn validate_name_bytes(name: &[u8]) -> Result<&str, NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(NameError::TooLong);
    }
    if name == b"." || name == b".." {
        return Err(NameError::Reserved);
    }
    if name.contains(&b'/') {
        return Err(NameError::Slash);
    }
    if name.contains(&0) {
        return Err(NameError::Nul);
    }
    std::str::from_utf8(name).map_err(|_| NameError::NotUtf8)
}

pub fn validate_name(name: &str) -> Result<(), NameError> {
    validate_name_bytes(name.as_bytes()).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_names() {
        assert_eq!(validate_name(""), Err(NameError::Empty));
        assert_eq!(validate_name("."), Err(NameError::Reserved));
        assert_eq!(validate_name(".."), Err(NameError::Reserved));
        assert_eq!(validate_name("a/b"), Err(NameError::Slash));
        assert_eq!(validate_name("a\0b"), Err(NameError::Nul));
        assert_eq!(validate_name(&"x".repeat(256)), Err(NameError::TooLong));
        assert_eq!(validate_name_bytes(b"\xff\xfe"), Err(NameError::NotUtf8));
    }

    #[test]
    fn accepts_good_names() {
        assert!(validate_name(&"x".repeat(255)).is_ok());
        assert!(validate_name("...").is_ok());
        assert!(validate_name(".hidden").is_ok());
        assert!(validate_name("photo (1).jpg").is_ok());
        // 255 bytes of multi-byte UTF-8 is fine; 256 is not.
        assert!(validate_name(&"é".repeat(127)).is_ok());
        assert_eq!(validate_name(&"é".repeat(128)), Err(NameError::TooLong));
    }
}

/// The name a losing version gets beside the winner:
/// `<stem> (conflict <device> <YYYY-MM-DD HH.MM.SS>)<.ext>`, timestamp in
/// UTC; `n` ≥ 2 appends ` n` inside the parentheses when the name is
/// taken. The result is cut to fit 255 bytes by shortening the stem.
pub fn conflict_name(name: &str, device: &str, time_ns: i64, n: u32) -> String {
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name, ""),
    };
    let secs = (time_ns.max(0) / 1_000_000_000) as u64;
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    // "2026-11-23T10:04:05Z" → "2026-11-23 10.04.05"
    let stamp = humantime::format_rfc3339_seconds(t)
        .to_string()
        .trim_end_matches('Z')
        .replace('T', " ")
        .replace(':', ".");
    let device: String = device.chars().filter(|c| *c != '/' && *c != '\0').collect();
    let suffix = if n >= 2 {
        format!(" {n}")
    } else {
        String::new()
    };
    let tail = format!(" (conflict {device} {stamp}{suffix}){ext}");
    let mut stem = stem.to_string();
    while stem.len() + tail.len() > MAX_NAME_BYTES && !stem.is_empty() {
        stem.pop();
    }
    format!("{stem}{tail}")
}

#[cfg(test)]
mod conflict_tests {
    use super::*;

    #[test]
    fn conflict_name_format() {
        // 2026-11-23 10:04:05 UTC
        let t = 1_795_428_245i64 * 1_000_000_000;
        assert_eq!(
            conflict_name("report.txt", "laptop", t, 1),
            "report (conflict laptop 2026-11-23 10.04.05).txt"
        );
        assert_eq!(
            conflict_name("Makefile", "pc", t, 2),
            "Makefile (conflict pc 2026-11-23 10.04.05 2)"
        );
        assert_eq!(
            conflict_name(".bashrc", "pc", t, 1),
            ".bashrc (conflict pc 2026-11-23 10.04.05)"
        );
        let long = conflict_name(&format!("{}.jpg", "a".repeat(250)), "pc", t, 1);
        assert!(long.len() <= MAX_NAME_BYTES && long.ends_with(").jpg"));
        assert!(validate_name(&long).is_ok());
    }
}
