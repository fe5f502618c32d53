//! The audit writer: one thread appends records with group commit.
//!
//! Callers hand in an [`Event`] and a completion callback; the writer takes every event waiting,
//! chains them and appends them to the trail in ONE durable append, then completes each caller.
//! Where the trail is kept is the store's choice (`trail.rs`): the sled store's live log takes
//! the group as one write and one `fdatasync` (`live.rs`), a store's audit tree as one atomic,
//! flushed batch conditional on the tail. Many requests share one sync, so durability does not
//! cost one fsync per request. A response must wait for its completion (the server does), so
//! nothing is answered before its record is durable; if the write fails every waiting caller
//! gets the error and the server refuses (fail closed).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::layout::{Tail, Trusted, now_ms, sign_checkpoint};
use super::trail::{Appended, Trail, trail_of};
use super::{EncodeError, Event, Format, KeyTransition, Operation, Outcome, Record, Role};
use crate::store::{Store, StoreError};

pub use super::signer::{AuditSigner, MemorySigner, Signer, SigningKey};

/// A signer over a fresh SM2 key that lives only in memory, with its public half: for tests and
/// tools that need signed checkpoints without a KMS (a server signs with the KMS audit key,
/// through `System::audit_signer`). It has one version, 1; [`MemorySigner`] can rotate.
///
/// # Errors
/// Key generation failed (no randomness).
pub fn ephemeral_signer(key_id: &str) -> Result<(Signer, crate::crypto::PublicKey), crate::Error> {
    let key = MemorySigner::new(key_id)?;
    let public = key.public_key(1).ok_or(crate::CryptoError::MalformedKey)?;
    Ok((key, public))
}

/// An audit line that cannot be encoded is not written: the write fails like a store write
/// (and the server refuses, fail closed), rather than storing or hashing anything in its place.
pub(super) fn unencodable(e: EncodeError) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

/// Called once per event when its record is durable (or failed).
pub type Completion = Box<dyn FnOnce(Result<Record, StoreError>) + Send>;

/// Called once for a group of events ([`AuditLog::append_all`]) when all their records are
/// durable, in order, or with the error when none is.
pub type GroupCompletion = Box<dyn FnOnce(Result<Vec<Record>, StoreError>) + Send>;

const MAX_GROUP: usize = 4096;
/// How long a group keeps retrying when other writers (other nodes) keep winning the tail.
const CONTENTION_BUDGET: Duration = Duration::from_secs(5);
/// How many times a checkpoint is re-signed after losing the tail to another writer.
const CHECKPOINT_ATTEMPTS: u32 = 4;

/// A random pause of up to `min(2^attempt, 32)` ms before re-trying a lost race on the tail.
fn backoff(attempt: u32) -> Duration {
    let cap_us = 1000u64 << attempt.min(5);
    let mut r = [0u8; 2];
    // Without randomness the pause is the cap: still bounded, merely less spread.
    let pause = crate::crypto::rng::fill(&mut r)
        .map_or(cap_us, |()| u64::from(u16::from_be_bytes(r)) % (cap_us + 1));
    Duration::from_micros(pause)
}

/// When checkpoints are written.
#[derive(Clone, Copy, Debug)]
pub struct CheckpointPolicy {
    pub every_records: u64,
    pub every: Duration,
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        Self {
            every_records: 1000,
            every: Duration::from_secs(60),
        }
    }
}

enum Msg {
    // Boxed: an event is far larger than the other messages.
    Event(Box<Event>, Completion),
    /// Events that go into one group, and so one atomic batch (a batch call's items).
    Events(Vec<Event>, GroupCompletion),
    Checkpoint(Box<dyn FnOnce(Result<(), StoreError>) + Send>),
    Stop,
}

/// The audit log of one node.
pub struct AuditLog {
    tx: Mutex<Sender<Msg>>,
    healthy: Arc<AtomicBool>,
    /// Events handed in and not yet written (or failed): the queue depth of the server's
    /// metrics ([`AuditLog::queue_depth`]).
    pending: Arc<AtomicU64>,
    /// Where the trail is kept: the store's audit tree, or the live log beside it.
    pub(super) trail: Arc<dyn Trail>,
    pub(super) node: String,
    pub(super) signer: Signer,
    thread: Mutex<Option<JoinHandle<()>>>,
}

struct Writer {
    trail: Arc<dyn Trail>,
    node: String,
    signer: Signer,
    policy: CheckpointPolicy,
    healthy: Arc<AtomicBool>,
    pending: Arc<AtomicU64>,
    last_checkpoint: Instant,
}

impl Writer {
    /// Chains and stores a group of events in one durable append. The append is conditional
    /// on the tail read, so two writers on one store cannot fork the chain.
    ///
    /// With several nodes on one database every node's writer appends to the one chain, so a
    /// lost race on the tail is normal, not a failure: the group is re-chained on the new tail
    /// and retried, with a short random pause so that racing writers spread out, until
    /// [`CONTENTION_BUDGET`] is spent. Only then does the group fail (and the node refuse
    /// requests until a write succeeds again).
    fn write_group(&mut self, events: Vec<(Event, Completion)>) {
        let started = Instant::now();
        let result = (|| {
            for attempt in 0u32.. {
                if attempt > 0 {
                    if started.elapsed() >= CONTENTION_BUDGET {
                        break;
                    }
                    std::thread::sleep(backoff(attempt));
                }
                let (mut tail, old) = self.trail.tail()?;
                if tail.signers.is_empty() {
                    // The version the trail starts from, fixed with its first records so that
                    // a rotation before the first checkpoint still gets its transition.
                    tail.adopt(self.signer.newest().as_ref());
                }
                let mut lines = Vec::with_capacity(events.len());
                let mut records = Vec::with_capacity(events.len());
                for (e, _) in &events {
                    let r = Record {
                        format: Format::CURRENT,
                        seq: tail.seq + 1,
                        time_ms: now_ms(),
                        node: self.node.clone(),
                        request_id: e.request_id.clone(),
                        principal: e.principal.clone(),
                        role: e.role.clone(),
                        operation: e.operation.clone(),
                        key_id: e.key_id.clone(),
                        key_version: e.key_version,
                        outcome: e.outcome.clone(),
                        context_hmac: e.context_hmac.clone(),
                        flags: e.flags.clone(),
                        transport: e.transport.clone(),
                        traceparent: e.traceparent.clone(),
                        transfer: e.transfer.clone().map(Box::new),
                        batch_id: e.batch_id.clone(),
                        pepper: e.pepper.clone(),
                        count: e.count,
                        transition: None,
                        prev: tail.hash.clone(),
                    };
                    let stored = r.to_json().map_err(unencodable)?;
                    tail.seq = r.seq;
                    tail.hash = r.hash().map_err(unencodable)?;
                    lines.push(Appended::Record {
                        seq: r.seq,
                        json: stored,
                    });
                    records.push(r);
                }
                match self.trail.append(old, &lines, &tail) {
                    Ok(()) => return Ok(records),
                    Err(StoreError::Conflict { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            Err(StoreError::Unavailable(
                "the audit chain is contended; retry".into(),
            ))
        })();
        match result {
            Ok(records) => {
                self.healthy.store(true, Ordering::SeqCst);
                for ((_, done), r) in events.into_iter().zip(records) {
                    done(Ok(r));
                }
            }
            Err(e) => {
                self.healthy.store(false, Ordering::SeqCst);
                let msg = e.to_string();
                for (_, done) in events {
                    done(Err(StoreError::Unavailable(format!(
                        "audit record not written: {msg}"
                    ))));
                }
            }
        }
    }

    /// Signs and stores a checkpoint over the chain's tail, if there is anything new and the
    /// KMS can sign (it cannot while sealed).
    ///
    /// When the audit key has a version newer than the one the trail signs with (it was
    /// rotated, here or on another node), the same batch first appends a transition record
    /// signed by the old version ([`KeyTransition`]), and the checkpoint is then signed by the
    /// new one: no checkpoint is ever signed by a version the trail has not introduced.
    ///
    /// A checkpoint that loses the race on the tail to another node's writer is signed again
    /// over the new tail a few times; if other writers keep winning, their own checkpoints
    /// cover the chain, so giving up then loses nothing.
    fn checkpoint(&mut self, force: bool) -> Result<(), StoreError> {
        self.last_checkpoint = Instant::now();
        for attempt in 0..CHECKPOINT_ATTEMPTS {
            if attempt > 0 {
                std::thread::sleep(backoff(attempt));
            }
            let (mut tail, old) = self.trail.tail()?;
            let newest = self.signer.newest();
            tail.adopt(newest.as_ref());
            let handover = tail.handover_to(newest);
            if tail.seq == 0 || (!force && tail.checkpointed_seq == tail.seq && handover.is_none())
            {
                return Ok(());
            }
            let mut lines = Vec::with_capacity(2);
            if let Some(new) = handover {
                let Some(record) = self.transition(&tail, &new).map_err(unencodable)? else {
                    return Ok(());
                };
                tail.seq = record.seq;
                tail.hash = record.hash().map_err(unencodable)?;
                tail.signers.push(Trusted::of(&new, record.seq));
                lines.push(Appended::Record {
                    seq: record.seq,
                    json: record.to_json().map_err(unencodable)?,
                });
            }
            let Some(key) = tail.current_signer().cloned() else {
                return Ok(());
            };
            let Some(cp) = sign_checkpoint(
                &self.signer,
                &key,
                Format::CURRENT,
                &self.node,
                tail.seq,
                &tail.hash,
                false,
            )
            .map_err(unencodable)?
            else {
                return Ok(());
            };
            tail.checkpointed_seq = tail.seq;
            lines.push(Appended::Checkpoint {
                seq: cp.seq,
                time_ms: cp.time_ms,
                json: serde_json::to_vec(&cp)
                    .map_err(|_| StoreError::Corrupt("checkpoint".into()))?,
            });
            match self.trail.append(old, &lines, &tail) {
                Ok(()) => return Ok(()),
                Err(StoreError::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Whether the audit key has a version the trail has not been handed over to yet.
    fn handover_pending(&self) -> bool {
        self.trail
            .tail()
            .is_ok_and(|(tail, _)| tail.handover_to(self.signer.newest()).is_some())
    }

    /// The record handing the trail over from its current version to `new`, after the tail,
    /// signed by the current (old) version; `None` while that cannot sign (sealed).
    fn transition(&self, tail: &Tail, new: &SigningKey) -> Result<Option<Record>, EncodeError> {
        let Some(from) = tail.current_signer() else {
            return Ok(None);
        };
        let mut record = Record {
            format: Format::CURRENT,
            seq: tail.seq + 1,
            time_ms: now_ms(),
            node: self.node.clone(),
            request_id: String::new(),
            principal: super::AUDIT_WRITER_PRINCIPAL.to_owned(),
            role: Role::System,
            operation: Operation::AuditKeyTransition,
            key_id: Some(new.key_id.clone()),
            key_version: Some(new.version),
            outcome: Outcome::Ok,
            context_hmac: None,
            flags: Vec::new(),
            transport: None,
            traceparent: None,
            transfer: None,
            batch_id: None,
            pepper: None,
            count: None,
            transition: Some(Box::new(KeyTransition {
                key_id: new.key_id.clone(),
                from_version: from.version,
                from_fingerprint: from.fingerprint.clone(),
                to_version: new.version,
                to_fingerprint: new.fingerprint(),
                to_public_key: hex::encode(new.public_key.spki_der()),
                signature: String::new(),
            })),
            prev: tail.hash.clone(),
        };
        let Some(sig) = self
            .signer
            .sign(from.version, &record.transition_signed_bytes()?)
        else {
            return Ok(None);
        };
        if let Some(t) = &mut record.transition {
            t.signature = hex::encode(sig);
        }
        Ok(Some(record))
    }

    fn run(mut self, rx: &Receiver<Msg>) {
        let mut since_checkpoint = 0u64;
        loop {
            let first = match rx.recv_timeout(self.policy.every) {
                Ok(m) => m,
                Err(RecvTimeoutError::Timeout) => {
                    let _ = self.checkpoint(false);
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let mut group = Vec::new();
            let mut later = Vec::new();
            let mut stop = false;
            let mut push = |m: Msg, group: &mut Vec<(Event, Completion)>| match m {
                Msg::Event(e, done) => group.push((*e, done)),
                Msg::Events(events, done) => group.extend(gathered(events, done)),
                Msg::Checkpoint(done) => later.push(done),
                Msg::Stop => stop = true,
            };
            push(first, &mut group);
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(m) => push(m, &mut group),
                    Err(_) => break,
                }
            }
            let n = group.len() as u64;
            // A key was rotated, perhaps the audit key: hand the trail over now rather than at
            // the next checkpoint, so the transition follows the rotation's own record.
            let rotated = group.iter().any(|(e, _)| {
                matches!(
                    e.operation,
                    Operation::RotateKey | Operation::ScheduledRotation
                ) && e.outcome == Outcome::Ok
            });
            if !group.is_empty() {
                self.write_group(group);
                self.pending.fetch_sub(n, Ordering::Relaxed);
                since_checkpoint += n;
            }
            let handover = rotated && self.handover_pending();
            if handover
                || since_checkpoint >= self.policy.every_records
                || self.last_checkpoint.elapsed() >= self.policy.every
            {
                since_checkpoint = 0;
                let _ = self.checkpoint(false);
            }
            for done in later {
                done(self.checkpoint(true));
            }
            if stop {
                let _ = self.checkpoint(false);
                return;
            }
        }
    }
}

/// `events`, each with a completion that gathers its record; the last one to complete calls
/// `done`. They are pushed into one group together, and a group is one append, acknowledged
/// whole or failed whole: the first error stands for all. (After a crash before the append was
/// acknowledged, the live log may keep a prefix of it, never a part of a record.)
fn gathered(
    events: Vec<Event>,
    done: GroupCompletion,
) -> impl Iterator<Item = (Event, Completion)> {
    struct Gather {
        records: Vec<Record>,
        error: Option<StoreError>,
        left: usize,
        done: Option<GroupCompletion>,
    }
    let left = events.len();
    let gather = Arc::new(Mutex::new(Gather {
        records: Vec::with_capacity(left),
        error: None,
        left,
        done: Some(done),
    }));
    if left == 0 {
        let taken = gather
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .done
            .take();
        if let Some(done) = taken {
            done(Ok(Vec::new()));
        }
    }
    events.into_iter().map(move |e| {
        let gather = Arc::clone(&gather);
        let one: Completion = Box::new(move |r| {
            let finished = {
                let mut g = gather
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                match r {
                    Ok(record) => g.records.push(record),
                    Err(e) => {
                        g.error.get_or_insert(e);
                    }
                }
                g.left -= 1;
                if g.left == 0 {
                    let records = std::mem::take(&mut g.records);
                    g.done
                        .take()
                        .map(|done| (done, g.error.take().map_or(Ok(records), Err)))
                } else {
                    None
                }
            };
            if let Some((done, result)) = finished {
                done(result);
            }
        });
        (e, one)
    })
}

impl AuditLog {
    /// Starts the writer thread for `node` over `store`'s trail: its live log when it keeps one
    /// (the sled store does), else its audit tree.
    pub fn start(
        store: Arc<dyn Store>,
        node: &str,
        signer: Signer,
        policy: CheckpointPolicy,
    ) -> Self {
        let (tx, rx) = mpsc::channel();
        let healthy = Arc::new(AtomicBool::new(true));
        let pending = Arc::new(AtomicU64::new(0));
        let trail = trail_of(&store);
        let writer = Writer {
            trail: Arc::clone(&trail),
            node: node.to_owned(),
            signer: Arc::clone(&signer),
            policy,
            healthy: Arc::clone(&healthy),
            pending: Arc::clone(&pending),
            last_checkpoint: Instant::now(),
        };
        let thread = std::thread::Builder::new()
            .name("kms-audit".into())
            .spawn(move || writer.run(&rx))
            .ok();
        Self {
            tx: Mutex::new(tx),
            healthy,
            pending,
            trail,
            node: node.to_owned(),
            signer,
            thread: Mutex::new(thread),
        }
    }

    /// Whether the last write succeeded. While it did not, the server refuses operations.
    #[must_use]
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::SeqCst)
    }

    /// Events waiting for their records to be durable: queued, or in the group being written.
    #[must_use]
    pub fn queue_depth(&self) -> u64 {
        self.pending.load(Ordering::Relaxed)
    }

    /// Queues an event; `done` runs once its record is durable, or with the error.
    pub fn append(&self, event: Event, done: Completion) {
        self.pending.fetch_add(1, Ordering::Relaxed);
        let sent = self
            .tx
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .send(Msg::Event(Box::new(event), done));
        if let Err(mpsc::SendError(Msg::Event(_, done))) = sent {
            self.pending.fetch_sub(1, Ordering::Relaxed);
            done(Err(StoreError::Unavailable(
                "the audit writer has stopped".into(),
            )));
        }
    }

    /// Queues `events` to be written together, in order, in one group and so in one durable
    /// append (one group commit); `done` runs once all their records are durable,
    /// or with the error when none was written.
    pub fn append_all(&self, events: Vec<Event>, done: GroupCompletion) {
        let n = events.len() as u64;
        self.pending.fetch_add(n, Ordering::Relaxed);
        let sent = self
            .tx
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .send(Msg::Events(events, done));
        if let Err(mpsc::SendError(Msg::Events(_, done))) = sent {
            self.pending.fetch_sub(n, Ordering::Relaxed);
            done(Err(StoreError::Unavailable(
                "the audit writer has stopped".into(),
            )));
        }
    }

    /// Appends and waits (for callers that are not async).
    pub fn append_blocking(&self, event: Event) -> Result<Record, StoreError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.append(
            event,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.recv().unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "the audit writer has stopped".into(),
            ))
        })
    }

    /// Writes a checkpoint now (and waits for it).
    pub fn checkpoint_now(&self) -> Result<(), StoreError> {
        let (tx, rx) = mpsc::sync_channel(1);
        let _ = self
            .tx
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .send(Msg::Checkpoint(Box::new(move |r| {
                let _ = tx.send(r);
            })));
        rx.recv().unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "the audit writer has stopped".into(),
            ))
        })
    }

    /// Writes a last checkpoint and stops the writer (shutdown).
    pub fn stop(&self) {
        let _ = self
            .tx
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .send(Msg::Stop);
        if let Some(t) = self
            .thread
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            let _ = t.join();
        }
    }
}
