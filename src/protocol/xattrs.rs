//! Extended attributes of a node, as every device and the server see them
//! (protocol 3), and the one set of rules they obey.
//!
//! # What is stored
//! Three namespaces, as on ext4: `user.*` (files and folders only: Linux
//! refuses them on symlinks and special nodes), `trusted.*` (readable and
//! writable only by a privileged caller) and `security.*` (`security.selinux`,
//! `security.capability`, ...: plain stored values). `system.*` (POSIX
//! ACLs) and every other prefix are not supported, as on a file system
//! mounted without ACL support. `user.nimbus.*` is reserved for the
//! mount's own computed attributes and is never stored.
//!
//! # Limits (ext4's)
//! - a name is 1..=[`XATTR_NAME_MAX`] bytes of UTF-8 with a non-empty part
//!   after its namespace prefix;
//! - a value is 0..=[`XATTR_SIZE_MAX`] bytes (empty values are allowed);
//! - names plus values of one node total at most [`XATTR_TOTAL_MAX`]
//!   bytes, ext4's one-block budget without `ea_inode`. It also keeps
//!   commit and pull bodies bounded: a node's attributes are at most a few
//!   KiB on the wire.
//!
//! # On the wire
//! [`Xattrs`] is a JSON object, name → value in standard base64 (values
//! are bytes, not text), omitted from [`super::NodeMeta`] when empty.

use super::NodeKind;
use base64::Engine;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;

/// Longest attribute name, in bytes (Linux `XATTR_NAME_MAX`).
pub const XATTR_NAME_MAX: usize = 255;
/// Largest attribute value, in bytes (Linux `XATTR_SIZE_MAX`).
pub const XATTR_SIZE_MAX: usize = 65_536;
/// Most bytes of names plus values one node may hold (ext4's 4 KiB block).
pub const XATTR_TOTAL_MAX: usize = 4_096;
/// The prefix of the mount's computed attributes (`user.nimbus.state`...):
/// never stored, never synced.
pub const XATTR_RESERVED_PREFIX: &str = "user.nimbus.";

/// The namespaces Nimbus stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XattrNamespace {
    /// `user.*`: files and folders only.
    User,
    /// `trusted.*`: privileged callers only.
    Trusted,
    /// `security.*`: stored as given (the kernel's security modules decide
    /// who may write them).
    Security,
}

impl XattrNamespace {
    /// Whether a node of `kind` can hold attributes of this namespace
    /// (Linux: `user.*` only on regular files and folders).
    pub fn allowed_on(self, kind: NodeKind) -> bool {
        match self {
            XattrNamespace::User => matches!(kind, NodeKind::File | NodeKind::Dir),
            XattrNamespace::Trusted | XattrNamespace::Security => true,
        }
    }
}

/// Why an attribute name, value or set is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum XattrError {
    /// Empty, or longer than [`XATTR_NAME_MAX`] bytes (Linux: ERANGE).
    #[error("attribute names are 1 to {XATTR_NAME_MAX} bytes")]
    NameLength,
    /// Not UTF-8, or nothing after the namespace prefix (EINVAL).
    #[error("attribute name {0:?} is not valid")]
    InvalidName(String),
    /// `system.*` (POSIX ACLs) or an unknown prefix (EOPNOTSUPP).
    #[error("attribute namespace of {0:?} is not supported (user., trusted. and security. are)")]
    Unsupported(String),
    /// `user.nimbus.*`: computed by the mount, never stored (EPERM).
    #[error("attribute {0:?} is reserved for Nimbus")]
    Reserved(String),
    /// `user.*` on a symlink or special node (EPERM).
    #[error("a {kind} cannot hold {name:?}: user attributes are for files and folders")]
    NotForKind { name: String, kind: &'static str },
    /// A value over [`XATTR_SIZE_MAX`] bytes (E2BIG).
    #[error("the value of {name:?} is {len} bytes; at most {XATTR_SIZE_MAX}")]
    ValueTooLarge { name: String, len: usize },
    /// Names plus values over [`XATTR_TOTAL_MAX`] bytes (ENOSPC).
    #[error("extended attributes total {total} bytes; a node holds at most {XATTR_TOTAL_MAX}")]
    TotalTooLarge { total: usize },
}

/// The namespace of attribute `name` (raw bytes, as a system call gives
/// it), with the name as text; every refusal as [`XattrError`], checked
/// in the kernel's order: length, then namespace, then the rest.
pub fn parse_xattr_name(name: &[u8]) -> Result<(XattrNamespace, &str), XattrError> {
    if name.is_empty() || name.len() > XATTR_NAME_MAX {
        return Err(XattrError::NameLength);
    }
    let lossy = || String::from_utf8_lossy(name).into_owned();
    let (ns, prefix) = if name.starts_with(b"user.") {
        (XattrNamespace::User, "user.")
    } else if name.starts_with(b"trusted.") {
        (XattrNamespace::Trusted, "trusted.")
    } else if name.starts_with(b"security.") {
        (XattrNamespace::Security, "security.")
    } else {
        return Err(XattrError::Unsupported(lossy()));
    };
    if name.starts_with(XATTR_RESERVED_PREFIX.as_bytes()) {
        return Err(XattrError::Reserved(lossy()));
    }
    let text = std::str::from_utf8(name).map_err(|_| XattrError::InvalidName(lossy()))?;
    if text.len() == prefix.len() || text.contains('\0') {
        return Err(XattrError::InvalidName(lossy()));
    }
    Ok((ns, text))
}

/// The stored extended attributes of one node, name → value, in name
/// order (see the module docs for the rules and the wire form).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Xattrs(BTreeMap<String, Vec<u8>>);

impl Xattrs {
    /// No attributes.
    pub fn new() -> Self {
        Xattrs::default()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.0.get(name).map(Vec::as_slice)
    }
    /// Sets `name` (no checks: see [`Xattrs::validate`]).
    pub fn insert(&mut self, name: String, value: Vec<u8>) {
        self.0.insert(name, value);
    }
    /// Removes `name`; its value if it was set.
    pub fn remove(&mut self, name: &str) -> Option<Vec<u8>> {
        self.0.remove(name)
    }
    /// Name → value, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }
    /// Bytes counted against [`XATTR_TOTAL_MAX`]: names plus values.
    pub fn total_bytes(&self) -> usize {
        self.0.iter().map(|(k, v)| k.len() + v.len()).sum()
    }
    /// Checks every rule of the module docs for a node of `kind`.
    pub fn validate(&self, kind: NodeKind) -> Result<(), XattrError> {
        for (name, value) in self.iter() {
            let (ns, _) = parse_xattr_name(name.as_bytes())?;
            if !ns.allowed_on(kind) {
                return Err(XattrError::NotForKind {
                    name: name.to_string(),
                    kind: kind.as_str(),
                });
            }
            if value.len() > XATTR_SIZE_MAX {
                return Err(XattrError::ValueTooLarge {
                    name: name.to_string(),
                    len: value.len(),
                });
            }
        }
        let total = self.total_bytes();
        if total > XATTR_TOTAL_MAX {
            return Err(XattrError::TotalTooLarge { total });
        }
        Ok(())
    }
}

impl FromIterator<(String, Vec<u8>)> for Xattrs {
    fn from_iter<I: IntoIterator<Item = (String, Vec<u8>)>>(iter: I) -> Self {
        Xattrs(iter.into_iter().collect())
    }
}

impl Serialize for Xattrs {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let b64 = &base64::engine::general_purpose::STANDARD;
        s.collect_map(self.0.iter().map(|(k, v)| (k, b64.encode(v))))
    }
}

impl<'de> Deserialize<'de> for Xattrs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let b64 = &base64::engine::general_purpose::STANDARD;
        let raw = BTreeMap::<String, String>::deserialize(d)?;
        raw.into_iter()
            .map(|(k, v)| match b64.decode(v.as_bytes()) {
                Ok(bytes) => Ok((k, bytes)),
                Err(e) => Err(D::Error::custom(format!(
                    "the value of extended attribute {k:?} is not base64: {e}"
                ))),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_kernel_rules() {
        use XattrNamespace::*;
        assert_eq!(parse_xattr_name(b"user.a").unwrap(), (User, "user.a"));
        assert_eq!(parse_xattr_name(b"trusted.x").unwrap().0, Trusted);
        assert_eq!(
            parse_xattr_name(b"security.capability").unwrap().0,
            Security
        );
        assert_eq!(parse_xattr_name(b""), Err(XattrError::NameLength));
        let long = format!("user.{}", "a".repeat(251));
        assert_eq!(long.len(), 256);
        assert_eq!(
            parse_xattr_name(long.as_bytes()),
            Err(XattrError::NameLength)
        );
        assert!(parse_xattr_name(&long.as_bytes()[..255]).is_ok());
        for unsupported in [
            "system.posix_acl_access",
            "system.posix_acl_default",
            "os2.x",
            "x",
        ] {
            assert!(
                matches!(
                    parse_xattr_name(unsupported.as_bytes()),
                    Err(XattrError::Unsupported(_))
                ),
                "{unsupported}"
            );
        }
        assert!(matches!(
            parse_xattr_name(b"user.nimbus.state"),
            Err(XattrError::Reserved(_))
        ));
        assert!(matches!(
            parse_xattr_name(b"user."),
            Err(XattrError::InvalidName(_))
        ));
        assert!(matches!(
            parse_xattr_name(b"user.\xff"),
            Err(XattrError::InvalidName(_))
        ));
        assert!(XattrNamespace::User.allowed_on(NodeKind::Dir));
        assert!(!XattrNamespace::User.allowed_on(NodeKind::Symlink));
        assert!(XattrNamespace::Trusted.allowed_on(NodeKind::Fifo));
    }

    #[test]
    fn a_set_is_validated_as_a_whole() {
        let one = |name: &str, len: usize| -> Xattrs {
            [(name.to_string(), vec![7; len])].into_iter().collect()
        };
        assert!(one("user.a", 0).validate(NodeKind::File).is_ok());
        assert!(one("user.a", XATTR_TOTAL_MAX - 6)
            .validate(NodeKind::File)
            .is_ok());
        assert_eq!(
            one("user.a", XATTR_TOTAL_MAX - 5).validate(NodeKind::File),
            Err(XattrError::TotalTooLarge {
                total: XATTR_TOTAL_MAX + 1
            })
        );
        assert!(matches!(
            one("user.a", XATTR_SIZE_MAX + 1).validate(NodeKind::File),
            Err(XattrError::ValueTooLarge { .. })
        ));
        assert!(matches!(
            one("user.a", 1).validate(NodeKind::Symlink),
            Err(XattrError::NotForKind { .. })
        ));
        assert!(one("trusted.a", 1).validate(NodeKind::Symlink).is_ok());
    }

    #[test]
    fn values_travel_as_base64() {
        let x: Xattrs = [
            ("user.bin".to_string(), vec![0, 255, 10]),
            ("user.empty".to_string(), vec![]),
        ]
        .into_iter()
        .collect();
        let json = serde_json::to_string(&x).unwrap();
        assert_eq!(json, r#"{"user.bin":"AP8K","user.empty":""}"#);
        assert_eq!(serde_json::from_str::<Xattrs>(&json).unwrap(), x);
        let err = serde_json::from_str::<Xattrs>(r#"{"user.a":"!!"}"#).unwrap_err();
        assert!(err.to_string().contains("not base64"), "{err}");
    }
}
