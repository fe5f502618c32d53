//! The export of the trail as JSON Lines, for auditors.

use super::Line;
use super::layout::{read_tail, sign_checkpoint};
use super::writer::AuditLog;
use crate::store::{StoreError, Tree};

impl AuditLog {
    /// The whole trail as JSON Lines, ending with a fresh checkpoint that closes the export.
    /// Needs the KMS unsealed (to sign).
    pub fn export(&self) -> Result<String, StoreError> {
        let mut lines: Vec<(u64, u8, Vec<u8>)> = Vec::new();
        for (k, v) in self.store.scan_prefix(Tree::Audit, b"r")? {
            let seq = k
                .get(1..9)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u64::from_be_bytes);
            lines.push((seq, 0, v));
        }
        for (k, v) in self.store.scan_prefix(Tree::Audit, b"c")? {
            let seq = k
                .get(1..9)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u64::from_be_bytes);
            lines.push((seq, 1, v));
        }
        lines.sort_by_key(|(seq, kind, _)| (*seq, *kind));
        let mut out = String::new();
        for (_, kind, bytes) in &lines {
            let line = if *kind == 0 {
                Line::Record(
                    serde_json::from_slice(bytes)
                        .map_err(|_| StoreError::Corrupt("audit record".into()))?,
                )
            } else {
                Line::Checkpoint(
                    serde_json::from_slice(bytes)
                        .map_err(|_| StoreError::Corrupt("checkpoint".into()))?,
                )
            };
            out.push_str(
                &serde_json::to_string(&line)
                    .map_err(|_| StoreError::Corrupt("audit line".into()))?,
            );
            out.push('\n');
        }
        let (tail, _) = read_tail(&*self.store)?;
        let cp = sign_checkpoint(&self.signer, &self.node, tail.seq, &tail.hash, true).ok_or_else(
            || {
                StoreError::Unavailable(
                    "the KMS is sealed: cannot sign the closing checkpoint".into(),
                )
            },
        )?;
        out.push_str(
            &serde_json::to_string(&Line::Checkpoint(cp))
                .map_err(|_| StoreError::Corrupt("checkpoint".into()))?,
        );
        out.push('\n');
        Ok(out)
    }
}
