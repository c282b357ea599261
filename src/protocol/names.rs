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

/// `<stem> (conflict <device> <YYYY-MM-DD HH.MM.SS>[ n])<.ext>`, UTC, with
/// ` n` only for `n ≥ 2`. Folders keep their whole name as the stem. The
/// stem is shortened (on a character boundary) so the result stays within
/// [`MAX_NAME_BYTES`]; `/`, NUL and control characters of the device name
/// become `_`.
pub fn conflict_name(
    name: &str,
    kind: super::NodeKind,
    device: &str,
    now_ns: i64,
    n: u32,
) -> String {
    let (stem, ext) = match name.rfind('.') {
        // A dot that starts the name (`.bashrc`) or ends it (`trail.`)
        // does not start an extension.
        Some(pos)
            if pos > 0
                && pos + 1 < name.len()
                && kind != super::NodeKind::Dir
                && name.len() - pos <= 32 =>
        {
            name.split_at(pos)
        }
        _ => (name, ""),
    };
    let device = device_in_name(device);
    let suffix = if n >= 2 {
        format!(" (conflict {device} {} {n})", utc_stamp(now_ns))
    } else {
        format!(" (conflict {device} {})", utc_stamp(now_ns))
    };
    let mut stem = stem.to_owned();
    truncate_to(
        &mut stem,
        MAX_NAME_BYTES.saturating_sub(suffix.len() + ext.len()),
    );
    format!("{stem}{suffix}{ext}")
}

/// The device name as [`conflict_name`] writes it.
fn device_in_name(device: &str) -> String {
    let mut device: String = device
        .chars()
        .map(|c| if c == '/' || c.is_control() { '_' } else { c })
        .collect();
    truncate_to(&mut device, 64);
    if device.trim().is_empty() {
        device = "unknown device".into();
    }
    device
}

/// The name a conflict copy named `copy` was made from: [`conflict_name`]
/// undone, given the mark's `device` and time (`at_ns`). `None` when
/// `copy` does not carry that suffix (the user renamed it). A stem that
/// [`conflict_name`] shortened stays short.
pub fn original_name(copy: &str, device: &str, at_ns: i64) -> Option<String> {
    let marker = format!(" (conflict {} {}", device_in_name(device), utc_stamp(at_ns));
    let pos = copy.rfind(&marker)?;
    let rest = &copy[pos + marker.len()..];
    let rest = match rest.strip_prefix(' ') {
        Some(numbered) => numbered.trim_start_matches(|c: char| c.is_ascii_digit()),
        None => rest,
    };
    let ext = rest.strip_prefix(')')?;
    let name = format!("{}{ext}", &copy[..pos]);
    validate_name(&name).ok().map(|_| name)
}

fn truncate_to(s: &mut String, max_bytes: usize) {
    if s.len() > max_bytes {
        let mut cut = max_bytes;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

/// `YYYY-MM-DD HH.MM.SS` in UTC.
pub fn utc_stamp(now_ns: i64) -> String {
    let secs = u64::try_from(now_ns.div_euclid(1_000_000_000)).unwrap_or(0);
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    // "YYYY-MM-DDTHH:MM:SSZ"
    humantime::format_rfc3339_seconds(t)
        .to_string()
        .trim_end_matches('Z')
        .replace('T', " ")
        .replace(':', ".")
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
    fn original_name_undoes_conflict_name() {
        use crate::protocol::NodeKind;
        let at = 1_700_000_000_123_456_789;
        for (name, kind) in [
            ("report.txt", NodeKind::File),
            ("Makefile", NodeKind::File),
            (".bashrc", NodeKind::File),
            ("a (conflict x).tar.gz", NodeKind::File),
            ("trail.", NodeKind::File),
        ] {
            for n in [1, 2, 17] {
                let copy = conflict_name(name, kind, "my/laptop", at, n);
                assert_eq!(
                    original_name(&copy, "my/laptop", at).as_deref(),
                    Some(name),
                    "{copy}"
                );
            }
        }
        let stamp = utc_stamp(at);
        assert_eq!(
            conflict_name("trail.", NodeKind::File, "desk", at, 1),
            format!("trail. (conflict desk {stamp})")
        );
        let copy = conflict_name("r.txt", NodeKind::File, "desk", at, 1);
        assert_eq!(original_name(&copy, "laptop", at), None);
        assert_eq!(original_name(&copy, "desk", at + 2_000_000_000), None);
        assert_eq!(original_name("renamed.txt", "desk", at), None);
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
