//! Conflict copies the model expects: named by the racing device and the
//! commit time, which the model cannot know in advance, so each is named
//! from the first tree compared after the race.

use super::attrs::Attrs;
use super::model::{Model, ModelPath, Node, Tree};
use crate::protocol::{conflict_name, NodeKind};

/// A conflict copy the model expects but cannot name in advance: the name
/// carries the commit time. It is `<prefix><YYYY-MM-DD HH.MM.SS>[ n]<suffix>`
/// in `folder`, holding `node` with `attrs` (its mtime unknown).
#[derive(Clone, Debug)]
pub(super) struct ExpectedConflict {
    folder: ModelPath,
    prefix: String,
    suffix: String,
    node: Node,
    attrs: Attrs,
}

impl ExpectedConflict {
    /// The copy of file `path` that device `device` makes of its `node`
    /// with `attrs`.
    pub(super) fn of(path: &ModelPath, device: &str, node: Node, attrs: Attrs) -> Self {
        let leaf = path.last().expect("non-empty path");
        // The name for time 0, split around its stamp.
        let zero = conflict_name(leaf, NodeKind::File, device, 0, 1);
        let stamp = " 1970-01-01 00.00.00)";
        let at = zero.find(stamp).expect("conflict names carry a stamp");
        ExpectedConflict {
            folder: path[..path.len() - 1].to_vec(),
            prefix: zero[..at + 1].to_string(),
            suffix: zero[at + stamp.len() - 1..].to_string(),
            node,
            attrs: Attrs {
                mtime: None,
                atime: None,
                ..attrs
            },
        }
    }

    pub(super) fn matches(&self, name: &str) -> bool {
        let Some(middle) = name
            .strip_prefix(&self.prefix)
            .and_then(|m| m.strip_suffix(&self.suffix))
        else {
            return false;
        };
        // `YYYY-MM-DD HH.MM.SS`, then ` n` for n ≥ 2.
        let shape = "dddd-dd-dd dd.dd.dd";
        let (stamp, n) = middle.split_at(middle.len().min(shape.len()));
        let stamp_ok = stamp.len() == shape.len()
            && stamp.chars().zip(shape.chars()).all(|(c, s)| match s {
                'd' => c.is_ascii_digit(),
                s => c == s,
            });
        let n_ok = n.is_empty()
            || n.strip_prefix(' ').is_some_and(|n| {
                !n.is_empty()
                    && n.chars().all(|c| c.is_ascii_digit())
                    && n.parse::<u32>().is_ok_and(|n| n >= 2)
            });
        stamp_ok && n_ok
    }
}

impl Model {
    /// Names the expected conflict copies from `got` (a tree the system
    /// under test shows): each must match exactly one entry of its folder
    /// that the model does not have, and then becomes a model node under
    /// that name. Anything else about the copy (kind, size, content) is
    /// compared with the rest of the tree afterwards.
    pub(super) fn adopt_conflicts(&mut self, got: &Tree) -> Result<(), String> {
        for c in std::mem::take(&mut self.conflicts) {
            let found: Vec<ModelPath> = got
                .keys()
                .map(|p| p.split('/').map(String::from).collect::<ModelPath>())
                .filter(|p| {
                    p.len() == c.folder.len() + 1
                        && p.starts_with(&c.folder)
                        && !self.nodes.contains_key(p)
                        && c.matches(p.last().expect("non-empty"))
                })
                .collect();
            match &found[..] {
                [one] => {
                    self.insert_new(one.clone(), c.node.clone(), c.attrs.clone());
                }
                _ => {
                    return Err(format!(
                        "expected one conflict copy `{}<stamp>{}` in /{}, found {found:?}",
                        c.prefix,
                        c.suffix,
                        c.folder.join("/")
                    ))
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::DeviceId;

    fn attrs() -> Attrs {
        Attrs::new(0o644, 0, DeviceId::random())
    }

    #[test]
    fn conflict_names_match_precisely() {
        let c = ExpectedConflict::of(
            &vec!["d".into(), "a.txt".into()],
            "left",
            Node::Dir,
            attrs(),
        );
        assert!(c.matches("a (conflict left 2024-05-06 07.08.09).txt"));
        assert!(c.matches("a (conflict left 2024-05-06 07.08.09 2).txt"));
        assert!(!c.matches("a (conflict left 2024-05-06 07.08.09 1).txt"));
        assert!(!c.matches("a (conflict right 2024-05-06 07.08.09).txt"));
        assert!(!c.matches("a (conflict left 2024-05-06 07.08).txt"));
        assert!(!c.matches("a.txt (conflict left 2024-05-06 07.08.09)"));
        let c = ExpectedConflict::of(&vec!["b".into()], "left", Node::Dir, attrs());
        assert!(c.matches("b (conflict left 2024-05-06 07.08.09)"));
    }
}
