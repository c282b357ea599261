//! Version vectors: `{device: counter}` per node.
//!
//! A device increments its own counter for every change it commits. The
//! server compares the vector a commit was based on with its own: if every
//! counter of the server's vector is ≤ the base, the commit fast-forwards;
//! if each side has counters the other lacks, the edits were concurrent.

use super::DeviceId;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::BTreeMap;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct VersionVector(BTreeMap<DeviceId, u64>);

/// How two version vectors relate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Causality {
    Equal,
    /// `self` happened before `other` (other has seen everything self has).
    Before,
    /// `self` happened after `other`.
    After,
    Concurrent,
}

impl VersionVector {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn get(&self, device: &DeviceId) -> u64 {
        self.0.get(device).copied().unwrap_or(0)
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Records one more change by `device`.
    pub fn increment(&mut self, device: DeviceId) {
        *self.0.entry(device).or_insert(0) += 1;
    }
    /// Pointwise maximum: the vector that has seen both.
    pub fn merge(&mut self, other: &VersionVector) {
        for (d, c) in &other.0 {
            let e = self.0.entry(*d).or_insert(0);
            *e = (*e).max(*c);
        }
    }
    pub fn compare(&self, other: &VersionVector) -> Causality {
        let mut less = false;
        let mut greater = false;
        for d in self.0.keys().chain(other.0.keys()) {
            match self.get(d).cmp(&other.get(d)) {
                Ordering::Less => less = true,
                Ordering::Greater => greater = true,
                Ordering::Equal => {}
            }
        }
        match (less, greater) {
            (false, false) => Causality::Equal,
            (true, false) => Causality::Before,
            (false, true) => Causality::After,
            (true, true) => Causality::Concurrent,
        }
    }
    /// True when `self` has seen everything in `other` (self ≥ other).
    pub fn dominates(&self, other: &VersionVector) -> bool {
        matches!(self.compare(other), Causality::Equal | Causality::After)
    }
    /// True when every counter of `self` except `device`'s own is ≤ the one
    /// in `base`. A device's own counter only moves through its own commits,
    /// which it applies in order, so a server vector ahead only in the
    /// committing device's counter is a replay of that device's own earlier
    /// commit, not a concurrent edit.
    pub fn others_seen_by(&self, base: &VersionVector, device: &DeviceId) -> bool {
        self.0.iter().all(|(d, c)| d == device || *c <= base.get(d))
    }
    pub fn iter(&self) -> impl Iterator<Item = (&DeviceId, &u64)> {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn dev(n: u8) -> DeviceId {
        DeviceId(uuid::Uuid::from_bytes([n; 16]))
    }

    #[test]
    fn compare_basic() {
        let (a, b) = (dev(1), dev(2));
        let mut x = VersionVector::new();
        let mut y = VersionVector::new();
        assert_eq!(x.compare(&y), Causality::Equal);
        x.increment(a);
        assert_eq!(x.compare(&y), Causality::After);
        assert_eq!(y.compare(&x), Causality::Before);
        y.merge(&x);
        assert_eq!(x.compare(&y), Causality::Equal);
        x.increment(a);
        y.increment(b);
        assert_eq!(x.compare(&y), Causality::Concurrent);
        assert!(!x.dominates(&y));
        let mut m = x.clone();
        m.merge(&y);
        assert!(m.dominates(&x) && m.dominates(&y));
    }

    #[test]
    fn own_counter_replay_is_not_a_conflict() {
        let (a, b) = (dev(1), dev(2));
        let mut base = VersionVector::new();
        base.increment(b);
        let mut server = base.clone();
        server.increment(a); // a's own earlier commit
        assert!(server.others_seen_by(&base, &a));
        server.increment(b); // someone else moved on
        assert!(!server.others_seen_by(&base, &a));
    }

    fn vv() -> impl Strategy<Value = VersionVector> {
        proptest::collection::btree_map(0u8..4, 0u64..4, 0..4)
            .prop_map(|m| VersionVector(m.into_iter().map(|(d, c)| (dev(d), c)).collect()))
    }

    proptest! {
        #[test]
        fn compare_is_antisymmetric(x in vv(), y in vv()) {
            let expected = match x.compare(&y) {
                Causality::Equal => Causality::Equal,
                Causality::Before => Causality::After,
                Causality::After => Causality::Before,
                Causality::Concurrent => Causality::Concurrent,
            };
            prop_assert_eq!(y.compare(&x), expected);
        }

        #[test]
        fn merge_dominates_both(x in vv(), y in vv()) {
            let mut m = x.clone();
            m.merge(&y);
            prop_assert!(m.dominates(&x));
            prop_assert!(m.dominates(&y));
        }
    }
}
