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
