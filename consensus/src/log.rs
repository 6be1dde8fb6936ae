//! The in-memory Raft log: a snapshot boundary, the entries retained around it, and the cursors
//! that say which of them are durable, committed and applied.
//!
//! The whole retained log lives in memory (the application bounds it by calling `Raft::compact`).
//! Where the retained log starts (`offset_index`, the entry just before the first retained one)
//! is kept apart from the snapshot we hold: compaction keeps a tail of
//! `Config::compaction_tail_entries` entries at or below the snapshot index (as etcd's
//! `SnapshotCatchUpEntries`), so a follower that is only a little behind is sent entries rather
//! than the whole snapshot. Entries move through four cursors, each monotonic except where noted:
//!
//! ```text
//!   offset_index <= snapshot_index
//!   offset_index < first_index ..= persisted_index ..= last_index
//!   snapshot_index <= applied_index <= applying_index <= commit_index <= last_index
//!   unstable_from: first entry not yet handed out in a Ready (may move back on truncation)
//! ```
//!
//! Invariants kept here: the commit index never decreases and a committed entry is never
//! truncated (Raft §5.4, State Machine Safety); entries are always contiguous.

use crate::message::{Entry, Index, Snapshot, Term};

/// The retained log plus its cursors. Read-only accessors are public so drivers and tests can
/// inspect a node; every mutation goes through `Raft`.
#[derive(Debug)]
pub struct RaftLog {
    /// Last index covered by the latest snapshot (0 when there is none).
    snapshot_index: Index,
    snapshot_term: Term,
    /// The index just before the first retained entry (`<= snapshot_index`): entries at or below
    /// it are gone, and a follower that needs one is sent the snapshot.
    offset_index: Index,
    /// The term of the entry at `offset_index` (0 for index 0), needed for log matching on the
    /// first retained entry.
    offset_term: Term,
    /// The latest snapshot with its data, kept to serve `InstallSnapshot` to lagging followers.
    snapshot: Option<Snapshot>,
    /// A snapshot received from the leader that the application has not yet been handed.
    pending_snapshot: Option<Snapshot>,
    /// `entries[i].index == offset_index + 1 + i`.
    entries: Vec<Entry>,
    /// First index not yet handed out in a `Ready` (`last_index + 1` when all were).
    unstable_from: Index,
    /// Highest index known durable on this node (only ever counts what a `Ready` handed out and the
    /// application acknowledged with `advance`).
    persisted_index: Index,
    commit_index: Index,
    /// Highest index handed out in `Ready::committed_entries` (or a snapshot).
    applying_index: Index,
    /// Highest index the application confirmed applied via `advance`.
    applied_index: Index,
}

impl RaftLog {
    /// Builds the log a node restored from disk: an optional snapshot and the entries kept on
    /// disk, which may start at or below the snapshot index (the tail compaction retained).
    ///
    /// The tail is kept only if it is contiguous up to the snapshot and its entry at the snapshot
    /// index has the snapshot's term (then, by Log Matching, every tail entry is the leader's);
    /// otherwise only the entries after the snapshot are kept. If the tail does not start at
    /// index 1, its first entry is dropped and serves as the offset, whose term log matching
    /// needs. Entries after the snapshot not following it contiguously are dropped from the
    /// first gap on (a torn write at the tail of the WAL must not make the node panic).
    pub(crate) fn restore(
        snapshot: Option<Snapshot>,
        entries: Vec<Entry>,
        commit_index: Index,
        applied_index: Index,
    ) -> RaftLog {
        let (snapshot_index, snapshot_term) = snapshot
            .as_ref()
            .map_or((0, 0), |s| (s.meta.last_index, s.meta.last_term));
        // The contiguous run that reaches the snapshot (tail) and continues after it.
        let mut kept: Vec<Entry> = Vec::with_capacity(entries.len());
        for entry in entries {
            let follows = kept
                .last()
                .is_some_and(|last: &Entry| last.index + 1 == entry.index);
            if follows {
                kept.push(entry);
            } else if entry.index <= snapshot_index + 1 {
                // A new run at or below the snapshot: an older one that does not reach it
                // contiguously is useless.
                kept.clear();
                kept.push(entry);
            } else {
                tracing::warn!(
                    index = entry.index,
                    "restored log has a gap; truncating there"
                );
                break;
            }
        }
        let tail_len = kept
            .iter()
            .take_while(|e| e.index <= snapshot_index)
            .count();
        let tail_usable = tail_len > 0
            && kept[tail_len - 1].index == snapshot_index
            && (snapshot_index == 0 || kept[tail_len - 1].term == snapshot_term);
        if !tail_usable {
            if tail_len > 0 {
                tracing::warn!(
                    snapshot_index,
                    "restored log entries behind the snapshot do not match it; dropping them"
                );
            }
            kept.drain(..tail_len);
        }
        let (offset_index, offset_term) = match kept.first() {
            Some(first) if first.index <= snapshot_index && first.index > 1 => {
                let offset = kept.remove(0);
                (offset.index, offset.term)
            }
            Some(first) if first.index <= snapshot_index => (0, 0),
            _ => (snapshot_index, snapshot_term),
        };
        let last_index = offset_index + kept.len() as u64;
        let commit_index = commit_index.clamp(snapshot_index, last_index.max(snapshot_index));
        let applied_index = applied_index.clamp(snapshot_index, commit_index);
        let log = RaftLog {
            snapshot_index,
            snapshot_term,
            offset_index,
            offset_term,
            snapshot,
            pending_snapshot: None,
            entries: kept,
            unstable_from: last_index + 1,
            persisted_index: last_index,
            commit_index,
            applying_index: applied_index,
            applied_index,
        };
        log.debug_check();
        log
    }

    /// The structural invariants, checked in debug builds after every change of the boundary.
    fn debug_check(&self) {
        debug_assert!(
            self.offset_index <= self.snapshot_index,
            "the retained log starts at or below the snapshot"
        );
        debug_assert!(
            self.last_index() >= self.snapshot_index,
            "the log reaches the snapshot"
        );
        debug_assert!(
            self.entries
                .iter()
                .enumerate()
                .all(|(i, e)| e.index == self.offset_index + 1 + i as u64),
            "retained entries are contiguous after the offset"
        );
        debug_assert!(
            self.entry(self.snapshot_index)
                .is_none_or(|e| e.term == self.snapshot_term),
            "the retained entry at the snapshot index has the snapshot's term"
        );
    }

    /// The first retained entry's index (`offset + 1`); a follower that needs an earlier one
    /// is sent the snapshot.
    pub fn first_index(&self) -> Index {
        self.offset_index + 1
    }

    pub fn last_index(&self) -> Index {
        self.offset_index + self.entries.len() as u64
    }

    pub fn last_term(&self) -> Term {
        // With no entries retained the offset is the snapshot boundary itself.
        self.entries.last().map_or(self.offset_term, |e| e.term)
    }

    pub fn snapshot_index(&self) -> Index {
        self.snapshot_index
    }

    pub fn commit_index(&self) -> Index {
        self.commit_index
    }

    pub fn applied_index(&self) -> Index {
        self.applied_index
    }

    pub fn persisted_index(&self) -> Index {
        self.persisted_index
    }

    /// The term of the entry at `index`; `None` if it was compacted away or does not exist yet.
    /// The offset and the snapshot boundary still have a known term.
    pub fn term(&self, index: Index) -> Option<Term> {
        if index == self.offset_index {
            return Some(self.offset_term);
        }
        if index == self.snapshot_index {
            return Some(self.snapshot_term);
        }
        self.entry(index).map(|e| e.term)
    }

    pub fn entry(&self, index: Index) -> Option<&Entry> {
        if index <= self.offset_index {
            return None;
        }
        let position = usize::try_from(index - self.offset_index - 1).ok()?;
        self.entries.get(position)
    }

    /// All retained entries, oldest first.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub(crate) fn snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.as_ref()
    }

    /// Raft §5.4.1: is a candidate's log `(last_index, last_term)` at least as up-to-date as ours?
    pub(crate) fn is_up_to_date(&self, last_index: Index, last_term: Term) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// Entries from `from` on, at least one if any exist, then bounded by count and bytes.
    pub(crate) fn entries_from(
        &self,
        from: Index,
        max_entries: usize,
        max_bytes: usize,
    ) -> Vec<Entry> {
        let mut batch = Vec::new();
        let mut bytes = 0;
        let mut index = from;
        while let Some(entry) = self.entry(index) {
            bytes += entry.size_bytes();
            if !batch.is_empty() && (batch.len() >= max_entries || bytes > max_bytes) {
                break;
            }
            batch.push(entry.clone());
            index += 1;
        }
        batch
    }

    /// The last index at or below `index` whose term is at most `term`, or the start of the
    /// retained log if the search reaches it. Drives fast backtracking on both sides of a
    /// rejected append.
    pub(crate) fn find_conflict_by_term(&self, index: Index, term: Term) -> (Index, Term) {
        let mut index = index.min(self.last_index());
        loop {
            match self.term(index) {
                Some(t) if t > term && index > self.offset_index => index -= 1,
                Some(t) => return (index, t),
                // Below the retained log (so below our snapshot): everything there is committed,
                // so it matches any leader.
                None => return (self.offset_index, self.offset_term),
            }
        }
    }

    /// Leader-side append of a fresh entry at the tail.
    pub(crate) fn append_new(&mut self, entry: Entry) {
        // A leader never overwrites its own log (Leader Append-Only, Raft Figure 3).
        debug_assert_eq!(
            entry.index,
            self.last_index() + 1,
            "leader append must extend the log"
        );
        debug_assert!(
            entry.term >= self.last_term(),
            "terms in the log never decrease"
        );
        self.entries.push(entry);
    }

    /// Follower-side append (Raft §5.3): if our log has `(prev_index, prev_term)`, drop any suffix
    /// that conflicts with `entries`, append what is new, and return the index of the last entry
    /// the request vouches for. `None` when the log-matching check fails.
    ///
    /// Entries at or below the commit index are never truncated: a leader asking for that is a
    /// bug (or a forged message), reported with an error and refused.
    pub(crate) fn maybe_append(
        &mut self,
        prev_index: Index,
        prev_term: Term,
        entries: Vec<Entry>,
    ) -> Option<Index> {
        if self.term(prev_index) != Some(prev_term) {
            return None;
        }
        let last_new = prev_index + entries.len() as u64;
        let mut conflict_at = None;
        for (offset, entry) in entries.iter().enumerate() {
            if entry.index != prev_index + 1 + offset as u64 {
                tracing::error!(
                    index = entry.index,
                    "AppendEntries with non-contiguous entries"
                );
                return None;
            }
            if conflict_at.is_none() && self.term(entry.index) != Some(entry.term) {
                conflict_at = Some(offset);
            }
        }
        if let Some(offset) = conflict_at {
            let first_new = entries[offset].index;
            if first_new <= self.commit_index {
                debug_assert!(
                    false,
                    "leader tried to overwrite committed entry {first_new}"
                );
                tracing::error!(index = first_new, "refusing to truncate a committed entry");
                return None;
            }
            self.truncate_from(first_new);
            self.entries.extend(entries.into_iter().skip(offset));
        }
        Some(last_new)
    }

    /// Drops every entry after `index`, if any and if none of them is committed. Only the
    /// planted bug [`crate::RaftBug::TruncateMatchingLog`] calls it: a correct follower
    /// truncates only at a conflict ([`RaftLog::maybe_append`]).
    pub(crate) fn truncate_after(&mut self, index: Index) {
        if index < self.last_index() && index >= self.commit_index && index >= self.snapshot_index {
            self.truncate_from(index + 1);
        }
    }

    /// Drops `index` and everything after it (index > commit_index is checked by the caller).
    fn truncate_from(&mut self, index: Index) {
        debug_assert!(index > self.commit_index && index > self.snapshot_index);
        let keep = (index - self.offset_index - 1) as usize;
        self.entries.truncate(keep);
        self.unstable_from = self.unstable_from.min(index);
        self.persisted_index = self.persisted_index.min(index - 1);
    }

    /// The entries handed out from `first` on could not be persisted: drop them. A follower may
    /// already have counted some as committed (it learned the leader's commit index); that
    /// local knowledge goes too, and the leader will teach it again. Committed entries handed out
    /// but not applied will be handed out again.
    pub(crate) fn abandon_unpersisted(&mut self, first: Option<Index>) -> Option<Index> {
        // Everything not durable goes: the abandoned Ready's entries and any appended since.
        let first = first
            .unwrap_or(self.unstable_from)
            .min(self.unstable_from)
            .max(self.snapshot_index + 1);
        let dropped_from = (first <= self.last_index()).then_some(first);
        if let Some(first) = dropped_from {
            debug_assert!(first > self.applied_index, "applied entries were persisted");
            let keep = (first - self.offset_index - 1) as usize;
            self.entries.truncate(keep);
        }
        let last_index = self.last_index();
        self.commit_index = self.commit_index.min(last_index).max(self.applied_index);
        self.persisted_index = self.persisted_index.min(last_index);
        self.unstable_from = last_index + 1;
        self.applying_index = self.applied_index;
        dropped_from
    }

    pub(crate) fn commit_to(&mut self, index: Index) -> bool {
        if index <= self.commit_index {
            return false;
        }
        debug_assert!(index <= self.last_index(), "cannot commit past the log");
        self.commit_index = index.min(self.last_index());
        true
    }

    /// Replaces the log with a snapshot received from the leader (Raft §7): everything is discarded,
    /// because the caller checked that our log does not contain the snapshot's last entry.
    pub(crate) fn install_snapshot(&mut self, snapshot: Snapshot) {
        let meta = &snapshot.meta;
        debug_assert!(meta.last_index > self.commit_index);
        self.snapshot_index = meta.last_index;
        self.snapshot_term = meta.last_term;
        // Our log does not hold the snapshot's last entry, so none of it can be kept as a tail.
        self.offset_index = meta.last_index;
        self.offset_term = meta.last_term;
        self.entries.clear();
        self.unstable_from = meta.last_index + 1;
        // Counted durable now: every effect of it is released only after the Ready carrying it is
        // persisted, and the leader role needs a self-match at least at the snapshot.
        self.persisted_index = meta.last_index;
        self.commit_index = meta.last_index;
        self.snapshot = Some(snapshot.clone());
        self.pending_snapshot = Some(snapshot);
        self.debug_check();
    }

    /// The application checkpointed its state machine at `snapshot.meta.last_index` (which the
    /// caller checked is applied and in the log): hold the snapshot, and forget the entries it
    /// covers except the last `tail_entries` of them, which lagging followers can still be sent.
    pub(crate) fn compact(&mut self, snapshot: Snapshot, tail_entries: u64, tail_bytes: u64) {
        let last_index = snapshot.meta.last_index;
        debug_assert!(last_index > self.snapshot_index && last_index <= self.applied_index);
        // The tail is at most `tail_entries` long and holds at most `tail_bytes` of commands.
        let mut tail_start = last_index.saturating_sub(tail_entries);
        let mut kept_bytes = 0u64;
        let mut index = last_index;
        while index > tail_start {
            kept_bytes += self.entry(index).map_or(0, Entry::command_bytes);
            if kept_bytes > tail_bytes {
                tail_start = index;
                break;
            }
            index -= 1;
        }
        // Never moves back: entries already dropped stay dropped.
        let new_offset = tail_start.max(self.offset_index);
        if new_offset > self.offset_index {
            let new_offset_term = self.term(new_offset);
            debug_assert!(new_offset_term.is_some(), "the new offset is in the log");
            self.offset_term = new_offset_term.unwrap_or(snapshot.meta.last_term);
            let drop = (new_offset - self.offset_index) as usize;
            self.entries.drain(..drop.min(self.entries.len()));
            self.offset_index = new_offset;
        }
        self.snapshot_index = last_index;
        self.snapshot_term = snapshot.meta.last_term;
        self.snapshot = Some(snapshot);
        self.debug_check();
    }

    pub(crate) fn has_unstable(&self) -> bool {
        self.unstable_from <= self.last_index()
    }

    pub(crate) fn has_pending_snapshot(&self) -> bool {
        self.pending_snapshot.is_some()
    }

    pub(crate) fn has_next_committed(&self) -> bool {
        self.pending_snapshot.is_some() || self.commit_index > self.applying_index
    }

    /// Hands out the received snapshot, if any; the application installs it before applying.
    pub(crate) fn take_pending_snapshot(&mut self) -> Option<Snapshot> {
        let snapshot = self.pending_snapshot.take()?;
        self.applying_index = self.applying_index.max(snapshot.meta.last_index);
        Some(snapshot)
    }

    /// Hands out the entries not yet given to the application for persistence.
    pub(crate) fn take_unstable(&mut self) -> Vec<Entry> {
        let entries = self.entries_from(self.unstable_from, usize::MAX, usize::MAX);
        self.unstable_from = self.last_index() + 1;
        entries
    }

    /// Hands out the next committed entries to apply (at most `max_entries`), exactly once.
    pub(crate) fn take_committed(&mut self, max_entries: usize) -> Vec<Entry> {
        debug_assert!(self.applying_index >= self.snapshot_index);
        let mut batch = Vec::new();
        while self.applying_index < self.commit_index && batch.len() < max_entries {
            match self.entry(self.applying_index + 1) {
                Some(entry) => batch.push(entry.clone()),
                None => break,
            }
            self.applying_index += 1;
        }
        batch
    }

    pub(crate) fn applying_index(&self) -> Index {
        self.applying_index
    }

    /// `advance`: entries up to `(index, term)` are durable, unless the log changed under them.
    pub(crate) fn persisted_to(&mut self, index: Index, term: Term) {
        if self.term(index) == Some(term) && index > self.persisted_index {
            self.persisted_index = index;
        }
    }

    /// `advance`: the application applied everything handed out up to `index`.
    pub(crate) fn applied_to(&mut self, index: Index) {
        debug_assert!(index <= self.commit_index, "applied past commit");
        if index > self.applied_index {
            self.applied_index = index;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::EntryPayload;

    fn entry(index: Index, term: Term) -> Entry {
        Entry {
            index,
            term,
            payload: EntryPayload::Noop,
        }
    }

    fn log_with_terms(terms: &[Term]) -> RaftLog {
        let entries = terms
            .iter()
            .enumerate()
            .map(|(i, &t)| entry(i as u64 + 1, t))
            .collect();
        RaftLog::restore(None, entries, 0, 0)
    }

    #[test]
    fn maybe_append_truncates_only_the_conflicting_suffix() {
        let mut log = log_with_terms(&[1, 1, 2, 2]);
        assert_eq!(log.maybe_append(2, 1, vec![entry(3, 3)]), Some(3));
        let terms: Vec<Term> = log.entries().iter().map(|e| e.term).collect();
        assert_eq!(terms, vec![1, 1, 3]);
        assert_eq!(
            log.persisted_index(),
            2,
            "the replaced entries are no longer durable"
        );
        assert_eq!(
            log.maybe_append(3, 2, vec![]),
            None,
            "log-matching check on the term"
        );
    }

    #[test]
    fn maybe_append_keeps_a_longer_matching_log() {
        let mut log = log_with_terms(&[1, 1, 1]);
        assert_eq!(log.maybe_append(0, 0, vec![entry(1, 1)]), Some(1));
        assert_eq!(
            log.last_index(),
            3,
            "a stale, shorter append must not truncate"
        );
    }

    #[test]
    fn find_conflict_by_term_skips_a_whole_term() {
        let log = log_with_terms(&[1, 1, 2, 2, 2, 4]);
        assert_eq!(log.find_conflict_by_term(6, 3), (5, 2));
        assert_eq!(log.find_conflict_by_term(10, 1), (2, 1));
        assert_eq!(log.find_conflict_by_term(4, 0), (0, 0));
    }

    fn snapshot_at(index: Index, term: Term) -> Snapshot {
        Snapshot {
            meta: crate::message::SnapshotMeta {
                last_index: index,
                last_term: term,
                voters: vec![1],
            },
            data: Vec::new(),
        }
    }

    #[test]
    fn compact_keeps_a_tail_behind_the_snapshot() {
        let mut log = log_with_terms(&[1, 1, 1, 2, 2, 2, 2, 2, 3, 3]);
        log.commit_to(10);
        log.applied_to(10);
        log.compact(snapshot_at(8, 2), 3, u64::MAX);
        assert_eq!(log.snapshot_index(), 8);
        assert_eq!(
            log.first_index(),
            6,
            "entries 6..=8 kept behind the snapshot"
        );
        assert_eq!(log.term(5), Some(2), "the offset keeps its term");
        assert_eq!(log.term(4), None);
        assert_eq!(log.entries_from(6, 10, usize::MAX).len(), 5);
        // A later compaction never brings dropped entries back, and a zero tail drops all.
        log.compact(snapshot_at(9, 3), 0, u64::MAX);
        assert_eq!(log.first_index(), 10);
        assert_eq!(log.term(9), Some(3));
        assert_eq!(log.last_index(), 10);
    }

    #[test]
    fn compact_keeps_no_more_command_bytes_behind_the_snapshot_than_its_budget() {
        // Entries 1..=10, each a command of 100 bytes.
        let entries = (1..=10)
            .map(|index| Entry {
                index,
                term: 1,
                payload: EntryPayload::Command(vec![7; 100]),
            })
            .collect();
        let mut log = RaftLog::restore(None, entries, 10, 0);
        log.applied_to(10);
        // Five entries allowed, but only 250 bytes: entries 7 and 8 (200 bytes) are kept.
        log.compact(snapshot_at(8, 1), 5, 250);
        assert_eq!(log.first_index(), 7);
        assert_eq!(log.entries_from(7, 10, usize::MAX).len(), 4);
        // A budget below one command keeps none of those the snapshot covers.
        log.compact(snapshot_at(10, 1), 5, 50);
        assert_eq!(log.first_index(), 11);
        assert_eq!(log.term(10), Some(1), "the offset keeps its term");
    }

    #[test]
    fn restore_keeps_a_tail_that_reaches_the_snapshot_with_its_term() {
        let entries = (5..=12)
            .map(|i| entry(i, if i <= 7 { 1 } else { 2 }))
            .collect();
        let log = RaftLog::restore(Some(snapshot_at(10, 2)), entries, 12, 0);
        assert_eq!(
            log.first_index(),
            6,
            "the first tail entry serves as the offset"
        );
        assert_eq!(log.term(5), Some(1));
        assert_eq!(log.last_index(), 12);
        assert_eq!(log.applied_index(), 10);
        // A tail from index 1 needs no offset entry.
        let log = RaftLog::restore(
            Some(snapshot_at(2, 1)),
            vec![entry(1, 1), entry(2, 1)],
            2,
            0,
        );
        assert_eq!((log.first_index(), log.last_index()), (1, 2));
    }

    #[test]
    fn restore_drops_a_tail_that_does_not_match_the_snapshot() {
        // The entry at the snapshot index has another term: a log the snapshot replaced.
        let entries = vec![entry(9, 1), entry(10, 1), entry(11, 3)];
        let log = RaftLog::restore(Some(snapshot_at(10, 2)), entries, 11, 0);
        assert_eq!((log.first_index(), log.last_index()), (11, 11));
        assert_eq!(log.term(10), Some(2));
        // A tail with a gap before the snapshot keeps only its run that reaches it.
        let entries = vec![entry(3, 1), entry(7, 1), entry(8, 1), entry(9, 1)];
        let log = RaftLog::restore(Some(snapshot_at(8, 1)), entries, 9, 0);
        assert_eq!((log.first_index(), log.last_index()), (8, 9));
        // A tail that stops short of the snapshot is useless.
        let entries = vec![entry(5, 1), entry(6, 1)];
        let log = RaftLog::restore(Some(snapshot_at(8, 1)), entries, 8, 0);
        assert_eq!((log.first_index(), log.last_index()), (9, 8));
    }

    #[test]
    fn entries_from_returns_at_least_one_entry_then_respects_limits() {
        let log = log_with_terms(&[1, 1, 1, 1]);
        assert_eq!(log.entries_from(1, 2, usize::MAX).len(), 2);
        assert_eq!(log.entries_from(1, 10, 1).len(), 1);
        assert!(log.entries_from(5, 10, 10).is_empty());
    }
}
