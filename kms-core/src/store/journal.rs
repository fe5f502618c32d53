//! A write-ahead journal that makes sled batches durable without a sled flush per batch.
//!
//! Every request writes an audit record, so the store's durability step sits on every request
//! path. sled makes a write durable by sealing its I/O buffer and handing the write to its thread
//! pool, which wakes every idle pool thread (seven) for each job: measured under load, sled's pool
//! made half of the server's context switches. Appending the batch to this file and calling
//! `fdatasync` is one `write` and one sync instead; sled itself is flushed only when the journal
//! has grown past a bound, and the journal is then emptied.
//!
//! The file is a short header followed by frames: `u32` big-endian payload length, the payload
//! (the batch's writes), and the payload's SM3 digest. A frame is acknowledged only after its
//! sync, so a crash can tear only the last frame, which belongs to a batch nobody was told about:
//! reading stops at the first frame that is short or whose digest is wrong.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use sm3::{Digest, Sm3};

use super::{Batch, BatchOp, StoreError, Tree};

const HEADER: &[u8; 8] = b"KMSJRNL1";
const DIGEST_LEN: usize = 32;
/// No batch comes near this; a larger length is a damaged frame, not an allocation to make.
const MAX_PAYLOAD: usize = 256 * 1024 * 1024;

const OP_PUT: u8 = 0;
const OP_DELETE: u8 = 1;

pub(super) struct Journal {
    file: File,
    len: u64,
}

impl Journal {
    /// Opens or creates the journal at `path` and reads back every intact batch in it, in order.
    /// Bytes after the last intact frame (a torn last write) are overwritten by the next append.
    pub(super) fn open(path: &Path) -> Result<(Self, Vec<Batch>), StoreError> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(StoreError::Io)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(StoreError::Io)?;
        if bytes.is_empty() {
            file.write_all(HEADER).map_err(StoreError::Io)?;
            file.sync_all().map_err(StoreError::Io)?;
            let journal = Self {
                file,
                len: HEADER.len() as u64,
            };
            return Ok((journal, Vec::new()));
        }
        let Some(frames) = bytes.strip_prefix(HEADER.as_slice()) else {
            return Err(StoreError::Corrupt(
                "the store's journal does not start with its header".into(),
            ));
        };
        let (batches, intact) = read_frames(frames)?;
        let len = (HEADER.len() + intact) as u64;
        file.seek(SeekFrom::Start(len)).map_err(StoreError::Io)?;
        Ok((Self { file, len }, batches))
    }

    /// Bytes in the journal, header included.
    pub(super) fn len(&self) -> u64 {
        self.len
    }

    /// Appends `batch`'s writes as one frame and syncs it: when this returns Ok, the batch
    /// survives a crash.
    pub(super) fn append(&mut self, batch: &Batch) -> Result<(), StoreError> {
        let frame = frame(&encode(batch)?)?;
        // If the write or the sync fails, what reached the file is no acknowledged frame; the
        // next append overwrites it, and a crash first leaves it to be cut off as torn.
        self.file
            .seek(SeekFrom::Start(self.len))
            .map_err(StoreError::Io)?;
        self.file.write_all(&frame).map_err(StoreError::Io)?;
        self.file.sync_data().map_err(StoreError::Io)?;
        self.len += frame.len() as u64;
        Ok(())
    }

    /// Empties the journal; only once everything in it is durable in the store itself.
    pub(super) fn reset(&mut self) -> Result<(), StoreError> {
        self.file
            .set_len(HEADER.len() as u64)
            .map_err(StoreError::Io)?;
        self.file.sync_data().map_err(StoreError::Io)?;
        self.len = HEADER.len() as u64;
        Ok(())
    }
}

fn frame(payload: &[u8]) -> Result<Vec<u8>, StoreError> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|&n| n as usize <= MAX_PAYLOAD)
        .ok_or_else(|| StoreError::Unavailable("batch too large for the journal".into()))?;
    let mut out = Vec::with_capacity(4 + payload.len() + DIGEST_LEN);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(&Sm3::digest(payload));
    Ok(out)
}

/// The batches of every intact frame, and the number of bytes they span.
fn read_frames(mut rest: &[u8]) -> Result<(Vec<Batch>, usize), StoreError> {
    let total = rest.len();
    let mut batches = Vec::new();
    while let Some((len, after)) = rest.split_first_chunk::<4>() {
        let len = u32::from_be_bytes(*len) as usize;
        if len > MAX_PAYLOAD || after.len() < len + DIGEST_LEN {
            break;
        }
        let (payload, after) = after.split_at(len);
        let (digest, after) = after.split_at(DIGEST_LEN);
        if Sm3::digest(payload).as_slice() != digest {
            break;
        }
        // The digest matched, so these are bytes this code wrote: failing to decode them is
        // damage the store must not paper over.
        batches.push(decode(payload)?);
        rest = after;
    }
    Ok((batches, total - rest.len()))
}

fn encode(batch: &Batch) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::new();
    for op in batch.ops() {
        let (tag, tree, key, value) = match op {
            BatchOp::Put { tree, key, value } => (OP_PUT, tree, key, Some(value)),
            BatchOp::Delete { tree, key } => (OP_DELETE, tree, key, None),
        };
        out.push(tag);
        out.push(u8::try_from(tree.index()).map_err(|_| too_large())?);
        put_bytes(&mut out, key)?;
        if let Some(value) = value {
            put_bytes(&mut out, value)?;
        }
    }
    Ok(out)
}

fn too_large() -> StoreError {
    StoreError::Unavailable("batch too large for the journal".into())
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), StoreError> {
    let len = u32::try_from(bytes.len()).map_err(|_| too_large())?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

fn decode(mut payload: &[u8]) -> Result<Batch, StoreError> {
    let damaged = || StoreError::Corrupt("a journal frame does not decode".into());
    let mut batch = Batch::new();
    while let Some((&tag, rest)) = payload.split_first() {
        let (&tree, rest) = rest.split_first().ok_or_else(damaged)?;
        let tree = *Tree::ALL.get(usize::from(tree)).ok_or_else(damaged)?;
        let (key, rest) = take_bytes(rest).ok_or_else(damaged)?;
        payload = match tag {
            OP_PUT => {
                let (value, rest) = take_bytes(rest).ok_or_else(damaged)?;
                batch.put(tree, key, value);
                rest
            }
            OP_DELETE => {
                batch.delete(tree, key);
                rest
            }
            _ => return Err(damaged()),
        };
    }
    Ok(batch)
}

fn take_bytes(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = bytes.split_first_chunk::<4>()?;
    let len = u32::from_be_bytes(*len) as usize;
    (rest.len() >= len).then(|| rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(i: u8) -> Batch {
        let mut b = Batch::new();
        b.put(Tree::Audit, vec![b'r', i], vec![i; usize::from(i) * 10]);
        b.put(Tree::Meta, b"tail".to_vec(), vec![i]);
        b.delete(Tree::Grants, vec![i, i]);
        b
    }

    #[test]
    fn batches_come_back_in_order_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let (mut j, found) = Journal::open(&path).unwrap();
        assert!(found.is_empty());
        for i in 0..5 {
            j.append(&sample(i)).unwrap();
        }
        drop(j);
        let (j, found) = Journal::open(&path).unwrap();
        assert_eq!(found.len(), 5);
        for (i, b) in (0..5).zip(&found) {
            assert!(b.ops() == sample(i).ops(), "batch {i}");
        }
        assert_eq!(j.len(), std::fs::metadata(&path).unwrap().len());
    }

    #[test]
    fn a_torn_last_frame_is_cut_off_and_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let (mut j, _) = Journal::open(&path).unwrap();
        j.append(&sample(1)).unwrap();
        j.append(&sample(2)).unwrap();
        let full = j.len();
        drop(j);
        // Every cut inside the last frame loses that frame only.
        let second = frame(&encode(&sample(2)).unwrap()).unwrap().len() as u64;
        for cut in 1..second {
            let f = OpenOptions::new().write(true).open(&path).unwrap();
            f.set_len(full - cut).unwrap();
            drop(f);
            let (mut j, found) = Journal::open(&path).unwrap();
            assert_eq!(found.len(), 1, "cut {cut}");
            assert_eq!(j.len(), full - second, "only the first frame counts");
            // The next append lands where the torn frame began.
            j.append(&sample(2)).unwrap();
            assert_eq!(j.len(), full);
        }
    }

    #[test]
    fn a_damaged_frame_ends_what_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let (mut j, _) = Journal::open(&path).unwrap();
        for i in 0..3 {
            j.append(&sample(i)).unwrap();
        }
        drop(j);
        let mut bytes = std::fs::read(&path).unwrap();
        let first = frame(&encode(&sample(0)).unwrap()).unwrap().len();
        // A flipped byte in the second frame's payload: its digest no longer matches.
        bytes[HEADER.len() + first + 6] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let (j, found) = Journal::open(&path).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(j.len(), (HEADER.len() + first) as u64);
    }

    #[test]
    fn reset_empties_it_and_a_foreign_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let (mut j, _) = Journal::open(&path).unwrap();
        j.append(&sample(3)).unwrap();
        j.reset().unwrap();
        drop(j);
        let (_, found) = Journal::open(&path).unwrap();
        assert!(found.is_empty());

        let other = dir.path().join("other");
        std::fs::write(&other, b"not a journal at all").unwrap();
        assert!(matches!(Journal::open(&other), Err(StoreError::Corrupt(_))));
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x9e37_79b9_u32;
        for len in 0..400 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    seed.to_be_bytes()[0]
                })
                .collect();
            let _ = read_frames(&bytes);
            let _ = decode(&bytes);
        }
    }
}
