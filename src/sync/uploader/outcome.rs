//! Outcome: the server's answer for each op → the local metadata cache
//! (adopt the new vector and sequence, clear what was pushed, bring back a
//! node whose delete lost against an edit, take in a conflict copy, take
//! the id of the node a create was merged into).

use super::plan::Origin;
use super::{RoundError, Uploader};
use crate::protocol::CommitOutcome;
use crate::vfs::SentState;

impl Uploader {
    pub(super) fn apply_outcome(
        &self,
        outcome: &CommitOutcome,
        origin: &Origin,
    ) -> Result<(), RoundError> {
        match (outcome, origin) {
            (
                CommitOutcome::Applied { node } | CommitOutcome::Renamed { node },
                Origin::Node { ino, sent },
            ) => {
                self.vfs.commit_done(*ino, sent, node)?;
            }
            (CommitOutcome::ConflictCopy { node, copy }, Origin::Node { ino, sent }) => {
                self.vfs.status().note_conflict();
                let sent = SentState {
                    conflict: true,
                    content: true,
                    ..(**sent).clone()
                };
                self.vfs.commit_done(*ino, &sent, node)?;
                self.vfs.apply_remote(copy)?;
            }
            (CommitOutcome::Superseded { node }, Origin::Node { ino, sent }) => {
                let sent = SentState {
                    content: false,
                    ..(**sent).clone()
                };
                self.vfs.commit_done(*ino, &sent, node)?;
            }
            (CommitOutcome::Superseded { node }, Origin::Delete(id)) => {
                // The delete lost against an edit elsewhere (or, for a
                // folder, a child the server kept): the node comes back.
                self.vfs.delete_lost(id, node)?;
            }
            (
                CommitOutcome::Applied { node } | CommitOutcome::Renamed { node },
                Origin::Delete(id),
            ) => {
                self.vfs.delete_done(id, Some(node))?;
            }
            (
                CommitOutcome::ConflictCopy { .. } | CommitOutcome::AlreadyGone,
                Origin::Delete(id),
            ) => {
                self.vfs.delete_done(id, None)?;
            }
            (CommitOutcome::AlreadyGone, Origin::Node { .. }) => {}
            // The create met an equal node: this one becomes it.
            (CommitOutcome::Merged { node }, Origin::Node { ino, sent }) => {
                self.vfs.merged_done(*ino, sent, node)?;
            }
            (CommitOutcome::Merged { .. }, Origin::Delete(id)) => {
                self.vfs.delete_done(id, None)?;
            }
        }
        Ok(())
    }
}
