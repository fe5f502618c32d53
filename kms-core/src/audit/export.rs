//! The export of the trail as JSON Lines, for auditors, streamed.
//!
//! An export is fixed when it begins ([`AuditLog::begin_export`]): the anchor (the closing
//! checkpoint of the last archive segment, if any), the tail, and a closing checkpoint over that
//! tail, signed then, so a sealed KMS is refused before a single line is sent. The lines follow
//! ([`AuditExport::write_to`]): the anchor, the hot records after it up to the tail with their
//! checkpoints, and the closing checkpoint. Records appended meanwhile are left for the next
//! export. The store is read a page at a time, so neither the export nor its caller ever holds
//! the trail whole.
//!
//! A file that starts with an anchor proves the records after it; the segment files before it,
//! each starting with the closing checkpoint of the one before, prove the rest back to the
//! genesis.

use std::sync::Arc;

use super::layout::{ReadError, Stored, sign_checkpoint, signer_for};
use super::trail::Trail;
use super::writer::{AuditLog, unencodable};
use super::{Checkpoint, Format, Line, Record};
use crate::store::StoreError;

/// An export that has begun: what it covers is fixed, the closing checkpoint is signed, and
/// the lines are yet to be read ([`AuditExport::write_to`]).
pub struct AuditExport {
    trail: Arc<dyn Trail>,
    /// The last archive segment's closing checkpoint: the export's first line.
    anchor: Option<Checkpoint>,
    /// The export covers records `anchor.seq + 1 ..= through`.
    through: u64,
    closing: Checkpoint,
}

/// One JSON line with its line ending.
pub(super) fn line_text(line: &Line) -> Result<String, StoreError> {
    let mut text =
        serde_json::to_string(line).map_err(|_| StoreError::Corrupt("audit line".into()))?;
    text.push('\n');
    Ok(text)
}

impl AuditExport {
    /// The `seq` of the last record the export holds.
    #[must_use]
    pub fn through(&self) -> u64 {
        self.through
    }

    /// The anchor the export starts from (`None`: it starts at the genesis).
    #[must_use]
    pub fn anchor(&self) -> Option<&Checkpoint> {
        self.anchor.as_ref()
    }

    /// Streams the export's lines to `out`, one call per line (each ends with `\n`), reading
    /// the trail a page at a time. An error from `out` stops the export and is returned.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when records the export covers were archived meanwhile
    /// (export again: the new export starts from the new anchor); [`StoreError::Corrupt`] when
    /// a record is missing or does not decode; store errors as they come.
    pub fn write_to(
        self,
        out: &mut dyn FnMut(&str) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let first = self.anchor.as_ref().map_or(0, |a| a.seq) + 1;
        if let Some(anchor) = &self.anchor {
            out(&line_text(&Line::Checkpoint(anchor.clone()))?)?;
        }
        for stored in self.trail.read(first, self.through)? {
            let line = match stored {
                Ok(Stored::Record(seq, bytes)) => {
                    Line::Record(serde_json::from_slice::<Record>(&bytes).map_err(|_| {
                        StoreError::Corrupt(format!("audit record {seq} does not decode"))
                    })?)
                }
                Ok(Stored::Checkpoint(bytes)) => {
                    Line::Checkpoint(serde_json::from_slice(&bytes).map_err(|_| {
                        StoreError::Corrupt("audit checkpoint does not decode".into())
                    })?)
                }
                Err(ReadError::Store(e)) => return Err(e),
                Err(ReadError::Missing(seq)) => return Err(self.missing(seq)),
            };
            out(&line_text(&line)?)?;
        }
        out(&line_text(&Line::Checkpoint(self.closing))?)
    }

    /// Why record `seq` is gone: archived since the export began (the anchor moved), or lost.
    fn missing(&self, seq: u64) -> StoreError {
        let moved = match self.trail.anchor() {
            Ok(now) => now.map(|(cp, _)| cp) != self.anchor,
            // Cannot tell; the export cannot finish either way.
            Err(e) => return e,
        };
        if moved {
            StoreError::Unavailable(format!(
                "audit records up to {seq} or beyond were archived during the export; export \
                 again (the new export starts after the archived segments)"
            ))
        } else {
            StoreError::Corrupt(format!(
                "audit record {seq} is missing from the store, though nothing was archived"
            ))
        }
    }
}

impl AuditLog {
    /// Begins an export: reads the anchor and the tail, and signs the closing checkpoint over
    /// the tail now. Needs the KMS unsealed (to sign).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] while the KMS is sealed; store errors.
    pub fn begin_export(&self) -> Result<AuditExport, StoreError> {
        // A rotation of the audit key not yet handed over in the trail: the writer hands it
        // over first (a transition record, then a checkpoint by the new version), so the export
        // shows it. Best effort: without it the export is still valid, closed by the old
        // version, and the next checkpoint hands over.
        if self.handover_pending()? {
            let _ = self.checkpoint_now();
        }
        // The anchor before the tail: an archive run in between moves the anchor past records
        // this export then finds missing, and it says so instead of skipping them.
        let anchor = self.trail.anchor()?.map(|(cp, _)| cp);
        let (tail, _) = self.trail.tail()?;
        let sealed = || {
            StoreError::Unavailable("the KMS is sealed: cannot sign the closing checkpoint".into())
        };
        let key = signer_for(&self.signer, &tail, tail.seq).ok_or_else(sealed)?;
        let closing = sign_checkpoint(
            &self.signer,
            &key,
            Format::CURRENT,
            &self.node,
            tail.seq,
            &tail.hash,
            true,
        )
        .map_err(unencodable)?
        .ok_or_else(sealed)?;
        Ok(AuditExport {
            trail: Arc::clone(&self.trail),
            anchor,
            through: tail.seq,
            closing,
        })
    }

    /// Whether the audit key has a version newer than the one the trail signs with.
    fn handover_pending(&self) -> Result<bool, StoreError> {
        let (tail, _) = self.trail.tail()?;
        Ok(tail.handover_to(self.signer.newest()).is_some())
    }

    /// The whole hot trail as JSON Lines, streamed to `out` one line at a time: the archive
    /// anchor (if any), the records and checkpoints after it, and a fresh checkpoint that closes
    /// the export. See [`AuditLog::begin_export`] and [`AuditExport::write_to`].
    ///
    /// # Errors
    /// As [`AuditLog::begin_export`] and [`AuditExport::write_to`].
    pub fn export_to(
        &self,
        out: &mut dyn FnMut(&str) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.begin_export()?.write_to(out)
    }

    /// The export as one string, for tests and small trails; servers stream with
    /// [`AuditLog::export_to`].
    ///
    /// # Errors
    /// As [`AuditLog::export_to`].
    pub fn export(&self) -> Result<String, StoreError> {
        let mut text = String::new();
        self.export_to(&mut |line| {
            text.push_str(line);
            Ok(())
        })?;
        Ok(text)
    }
}
