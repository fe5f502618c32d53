//! Crash consistency (issue 3): a child process writing keys and rotations to a real sled store is
//! killed with SIGKILL at random moments, round after round on the same store. After every kill the
//! parent reopens the store in a fresh `Kms`, unseals it and checks that every write the child
//! acknowledged is present and usable, and that nothing is corrupt.
//!
//! The child is this test binary itself, re-executed with `--exact child_writer --ignored`; the
//! `child_writer` test does nothing unless [`CHILD_ENV`] names a work directory. The child appends
//! one line to `acked.log` (and fsyncs it) after each call that returned `Ok`, so every line in the
//! log is a promise the KMS made before it was killed.
//!
//! Imports (issue 19) run in the same rounds: a key of origin external is created, given import
//! parameters and its wrapped material; after every kill each such key is either still waiting
//! with no material or holds exactly its material with its token spent — never half of one.
//!
//! The audit trail (issue 20) runs in the same rounds, in the store's live log: the child's audit
//! writer records an event for every call, two threads append their own events as fast as the
//! log takes them (so that groups of several records are in flight when the kill lands), and
//! batches go in as one group; the child acknowledges each record in `audited.log` once its
//! writer said it was durable. After every kill the parent reopens the log, checks that every
//! acknowledged record is in the trail under its `seq`, that the trail verifies with the audit
//! key, and that it goes on. Every third round the parent first tears the last record itself (a
//! part of a record line, as a power loss in the middle of a write leaves, or zeros): the open
//! must cut exactly the unfinished bytes, and the chain must continue from the last whole record.
//!
//! Replay nonces (the sled store's nonce trees) run in the same rounds: two child threads record
//! random 16-byte nonces through the KMS's replay guard as fast as the store takes them, and
//! acknowledge each one told `Fresh` in `nonces.log`. After every kill the parent presents every
//! acknowledged nonce again, at its own timestamp: each must come back `Replayed`, since a nonce
//! the store lost would let its request be accepted a second time within its window.
//!
//! Reproduce a failing run with `KMS_DURABILITY_SEED=<seed printed on failure>` (timing still
//! varies; the seed fixes the kill delays and the child's choices).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kms_core::alg::{KeySpec, Purpose, SignatureParams};
use kms_core::audit::writer::{AuditLog, CheckpointPolicy};
use kms_core::audit::{self, AuditKeys, Event, Line, Operation, Outcome};
use kms_core::authz::{Principal, Role};
use kms_core::crypto::Message;
use kms_core::crypto::transport::{self, WrappingSpec};
use kms_core::envelope::EncryptionContext;
use kms_core::hierarchy::share::Share;
use kms_core::keys::record::KeyRecord;
use kms_core::keys::record::Origin;
use kms_core::keys::state::KeyState;
use kms_core::keys::{Alias, KeyId, KeyRef, Namespace};
use kms_core::policy::Policy;
use kms_core::replay::Freshness;
use kms_core::store::{AUDIT_DIR, SledStore, Store, Tree};
use kms_core::{
    CreateKeyRequest, ImportMaterialRequest, KeyOptions, KmsConfig, TestKms, UnsealProgress,
};

/// Names the child's work directory; unset, `child_writer` returns at once.
const CHILD_ENV: &str = "KMS_DURABILITY_CHILD_DIR";
/// The child's seed (parent → child), or the run's seed when set by a person reproducing a failure.
const SEED_ENV: &str = "KMS_DURABILITY_SEED";
const ROUNDS: u64 = 24;
/// Rounds in which the kill may land before the child is even unsealed (during sled recovery).
const EARLY_KILL_EVERY: u64 = 4;
/// A child left running (parent gone) stops by itself after this long.
const CHILD_MAX_RUN: Duration = Duration::from_secs(20);
const READY_WAIT: Duration = Duration::from_secs(15);

const APP: &str = "app-a";
const NAMESPACE: &str = "a";

/// What the child creates, in turn: GM first, with AES and HMAC-SHA-256 alongside (no RSA: slow).
const KINDS: [(Purpose, KeySpec); 5] = [
    (Purpose::Encrypt, KeySpec::Sm4Gcm),
    (Purpose::Mac, KeySpec::HmacSm3),
    (Purpose::Sign, KeySpec::Sm2),
    (Purpose::Encrypt, KeySpec::Aes256Gcm),
    (Purpose::Mac, KeySpec::HmacSha256),
];

/// SplitMix64: small, seedable, good enough to pick delays and operations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn index(&mut self, len: usize) -> usize {
        usize::try_from(self.below(u64::try_from(len).unwrap())).unwrap()
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next().to_le_bytes()[0]).collect()
    }
}

fn fresh_seed() -> u64 {
    if let Ok(s) = std::env::var(SEED_ENV) {
        return s.parse().expect("KMS_DURABILITY_SEED must be a u64");
    }
    let mut h = RandomState::new().build_hasher();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    h.write_u128(nanos);
    h.write_u32(std::process::id());
    h.finish()
}

struct Paths {
    store: PathBuf,
    share: PathBuf,
    acked: PathBuf,
    /// One line per audit record the child's writer said was durable: `<request id> <seq>`.
    audited: PathBuf,
    /// One line per nonce the replay guard said was fresh: `<key id> <timestamp> <nonce hex>`.
    nonces: PathBuf,
    ready: PathBuf,
}

impl Paths {
    fn new(dir: &Path) -> Self {
        Self {
            store: dir.join("store"),
            share: dir.join("share.txt"),
            acked: dir.join("acked.log"),
            audited: dir.join("audited.log"),
            nonces: dir.join("nonces.log"),
            ready: dir.join("ready"),
        }
    }
}

/// An audit event as the server makes one for an app's call.
fn audit_event(request_id: String, operation: Operation, batch_id: Option<String>) -> Event {
    Event {
        request_id,
        principal: APP.into(),
        role: audit::Role::App,
        operation,
        key_id: None,
        key_version: None,
        outcome: Outcome::Ok,
        context_hmac: None,
        flags: Vec::new(),
        transport: None,
        traceparent: None,
        transfer: None,
        batch_id,
        pepper: None,
        count: None,
    }
}

/// The audit writer the child and the parent run over the store's trail, signing with the
/// KMS's own audit key; a checkpoint every 50 records.
fn audit_log(kms: &TestKms, node: &str) -> AuditLog {
    AuditLog::start(
        Arc::clone(kms.store()),
        node,
        kms.system().audit_signer(),
        CheckpointPolicy {
            every_records: 50,
            every: Duration::from_secs(3600),
        },
    )
}

fn ns() -> Namespace {
    Namespace::new(NAMESPACE).unwrap()
}

fn context() -> EncryptionContext {
    [("test", "durability")].into_iter().collect()
}

fn spec_by_name(name: &str) -> KeySpec {
    *KeySpec::ALL
        .iter()
        .find(|s| s.name() == name)
        .unwrap_or_else(|| panic!("unknown spec {name}"))
}

fn purpose_by_name(name: &str) -> Purpose {
    *Purpose::ALL
        .iter()
        .find(|p| p.name() == name)
        .unwrap_or_else(|| panic!("unknown purpose {name}"))
}

/// Opens the store in a fresh `Kms` and unseals it with the 1-of-1 share file.
fn open_unsealed(paths: &Paths) -> (TestKms, Principal, Principal) {
    let (kms, admin, app, _) = open_unsealed_recovering(paths);
    (kms, admin, app)
}

/// [`open_unsealed`], with what the opening of the live audit log cut (bytes), if anything.
fn open_unsealed_recovering(paths: &Paths) -> (TestKms, Principal, Principal, Option<u64>) {
    let sled = SledStore::open(&paths.store).expect("open sled store after the crash");
    let cut = sled.audit_recovery().map(|r| r.cut_bytes);
    let store: Arc<dyn Store> = Arc::new(sled);
    let kms = TestKms::open(store, KmsConfig::default());
    assert!(kms.is_sealed(), "a reopened KMS must start sealed");
    let share = Share::from_text(&fs::read_to_string(&paths.share).unwrap());
    assert_eq!(kms.unseal_with(&share).unwrap(), UnsealProgress::Unsealed);
    let admin = kms.principal("admin").unwrap().expect("admin principal");
    let app = kms.principal(APP).unwrap().expect("app principal");
    (kms, admin, app, cut)
}

// ---------------------------------------------------------------------------------------------
// The child.

/// One acknowledgement: written in one `write` call, then fsynced.
struct Acks(File);

impl Acks {
    fn ack(&mut self, line: &str) {
        let mut bytes = line.as_bytes().to_vec();
        bytes.push(b'\n');
        self.0.write_all(&bytes).unwrap();
        self.0.sync_all().unwrap();
    }
}

/// The replay guard's domain for the nonces the child records.
const NONCE_DOMAIN: &str = "request";

/// The writer, run in a child process. Loops until killed (or [`CHILD_MAX_RUN`]).
#[test]
#[ignore = "the crash-consistency child; run by `crash_consistency_under_sigkill`"]
fn child_writer() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let paths = Paths::new(Path::new(&dir));
    let mut rng = Rng(std::env::var(SEED_ENV).unwrap().parse().unwrap());
    let started = Instant::now();
    let (kms, admin, app) = open_unsealed(&paths);
    // Shared with the nonce threads.
    let kms = Arc::new(kms);
    let audit = Arc::new(audit_log(&kms, "child"));
    let audited = Arc::new(Mutex::new(Acks(
        OpenOptions::new()
            .append(true)
            .create(true)
            .open(&paths.audited)
            .unwrap(),
    )));
    // Request ids are unique across rounds: the round's seed names them.
    let run = rng.next();
    let record = |rid: String, op: Operation| {
        let r = audit
            .append_blocking(audit_event(rid.clone(), op, None))
            .unwrap();
        audited.lock().unwrap().ack(&format!("{rid} {}", r.seq));
    };
    // Two threads that keep the writer busy, so that groups of several records are written
    // (and torn) together.
    let busy = Arc::new(AtomicBool::new(true));
    let pumps: Vec<_> = (0..2)
        .map(|t| {
            let (audit, audited, busy) =
                (Arc::clone(&audit), Arc::clone(&audited), Arc::clone(&busy));
            thread::spawn(move || {
                let mut n = 0u64;
                while busy.load(Ordering::SeqCst) {
                    let rid = format!("{run:016x}-t{t}-{n}");
                    let r = audit
                        .append_blocking(audit_event(rid.clone(), Operation::GenerateRandom, None))
                        .unwrap();
                    audited.lock().unwrap().ack(&format!("{rid} {}", r.seq));
                    n += 1;
                }
            })
        })
        .collect();
    // Two threads that record nonces as fast as the store takes them, so that the kill lands
    // among nonces just told fresh, some of them from concurrent calls.
    let nonce_acks = Arc::new(Mutex::new(Acks(
        OpenOptions::new()
            .append(true)
            .create(true)
            .open(&paths.nonces)
            .unwrap(),
    )));
    let noncers: Vec<_> = (0..2)
        .map(|t| {
            let (kms, nonce_acks, busy) =
                (Arc::clone(&kms), Arc::clone(&nonce_acks), Arc::clone(&busy));
            let mut rng = Rng(rng.next());
            thread::spawn(move || {
                let key_id = format!("{run:016x}-n{t}");
                while busy.load(Ordering::SeqCst) {
                    let nonce = rng.bytes(16);
                    let now = kms.clock_now();
                    let fresh = kms
                        .replay_guard()
                        .remember(NONCE_DOMAIN, &key_id, &nonce, now, now)
                        .unwrap();
                    assert_eq!(fresh, Freshness::Fresh, "a random nonce was not fresh");
                    nonce_acks
                        .lock()
                        .unwrap()
                        .ack(&format!("{key_id} {now} {}", hex::encode(&nonce)));
                }
            })
        })
        .collect();
    File::create(&paths.ready).unwrap().sync_all().unwrap();
    let mut acks = Acks(
        OpenOptions::new()
            .append(true)
            .create(true)
            .open(&paths.acked)
            .unwrap(),
    );
    let mut ops = 0u64;
    let mut op_id = || {
        ops += 1;
        format!("{run:016x}-op-{ops}")
    };
    // Keys of earlier rounds are rotated and used too.
    // (Only the app's namespace: the KMS may hold keys of its own elsewhere.)
    let mut keys: Vec<(KeyId, Purpose)> = kms
        .list_keys(&admin, Some(&ns()))
        .unwrap()
        .into_iter()
        .filter(|k| k.origin == Origin::Generated)
        .map(|k| (k.id, k.purpose))
        .collect();
    let ctx = context();
    let params = SignatureParams::default();
    let mut turn = rng.index(KINDS.len());
    while started.elapsed() < CHILD_MAX_RUN {
        // Create (half of them with an alias, which adds a tree to the batch).
        let (purpose, spec) = KINDS[turn % KINDS.len()];
        turn += 1;
        let alias = (rng.below(2) == 0).then(|| format!("k{:016x}", rng.next()));
        let info = kms
            .create_key(
                &admin,
                CreateKeyRequest {
                    namespace: ns(),
                    purpose,
                    spec,
                    alias: alias.as_deref().map(|a| Alias::new(a).unwrap()),
                    rotation_period: None,
                    description: "durability".into(),
                },
            )
            .unwrap();
        record(op_id(), Operation::CreateKey);
        acks.ack(&format!(
            "created {} {} {} {}",
            info.id,
            purpose.name(),
            spec.name(),
            alias.as_deref().unwrap_or("-")
        ));
        keys.push((info.id, purpose));

        // Rotate an earlier key.
        let (id, _) = keys[rng.index(keys.len())];
        let info = kms.rotate_key(&admin, &KeyRef::Id(id)).unwrap();
        record(op_id(), Operation::RotateKey);
        acks.ack(&format!("rotated {id} {}", info.current_version()));

        // A batch call: its items go to the writer together, as one group.
        let batch = op_id();
        let items = 2 + rng.below(20);
        let events = (0..items)
            .map(|i| {
                audit_event(
                    format!("{batch}.{i}"),
                    Operation::Encrypt,
                    Some(batch.clone()),
                )
            })
            .collect();
        let (tx, rx) = std::sync::mpsc::channel();
        audit.append_all(events, Box::new(move |r| tx.send(r).unwrap()));
        for r in rx.recv().unwrap().unwrap() {
            audited
                .lock()
                .unwrap()
                .ack(&format!("{} {}", r.request_id, r.seq));
        }

        // Use keys: encrypt, sign, MAC (data-plane calls write nothing, but what they return
        // must still verify after the crash, under the version they name).
        let pick = |rng: &mut Rng, want: Purpose| {
            let of: Vec<KeyId> = keys
                .iter()
                .filter(|(_, p)| *p == want)
                .map(|(id, _)| *id)
                .collect();
            (!of.is_empty()).then(|| of[rng.index(of.len())])
        };
        if let Some(id) = pick(&mut rng, Purpose::Encrypt) {
            let len = 1 + rng.index(64);
            let plaintext = rng.bytes(len);
            let out = kms
                .encrypt(&app, &KeyRef::Id(id), &ctx, &plaintext)
                .unwrap();
            acks.ack(&format!(
                "encrypted {id} {} {} {}",
                out.key_version,
                hex::encode(&out.ciphertext),
                hex::encode(&plaintext)
            ));
        }
        if let Some(id) = pick(&mut rng, Purpose::Sign) {
            let message = rng.bytes(32);
            let out = kms
                .sign(&app, &KeyRef::Id(id), Message::Raw(&message), &params)
                .unwrap();
            acks.ack(&format!(
                "signed {id} {} {} {}",
                out.key_version,
                hex::encode(&message),
                hex::encode(&out.signature)
            ));
        }
        if let Some(id) = pick(&mut rng, Purpose::Mac) {
            let data = rng.bytes(24);
            let out = kms.generate_mac(&app, &KeyRef::Id(id), &data).unwrap();
            acks.ack(&format!(
                "mac {id} {} {} {}",
                out.key_version,
                hex::encode(&data),
                hex::encode(&out.signature)
            ));
        }

        // Bring a key in (three writes: the key, its token, then material and spent token in
        // one batch), and use it at once.
        let info = kms
            .create_key_with(
                &admin,
                CreateKeyRequest {
                    namespace: ns(),
                    purpose: Purpose::Encrypt,
                    spec: KeySpec::Sm4Gcm,
                    alias: None,
                    rotation_period: None,
                    description: "durability import".into(),
                },
                KeyOptions {
                    external: true,
                    exportable: false,
                },
            )
            .unwrap();
        acks.ack(&format!("external {}", info.id));
        let key = KeyRef::Id(info.id);
        let params = kms
            .get_import_parameters(&admin, &key, WrappingSpec::Sm2, None)
            .unwrap();
        let material = rng.bytes(16);
        let approved = Policy::default()
            .approve(Purpose::AsymmetricDecrypt, KeySpec::Sm2)
            .unwrap();
        let wrapped = transport::wrap(
            &approved,
            WrappingSpec::Sm2,
            &params.wrapping_public_key,
            &material,
        )
        .unwrap();
        kms.import_key_material(
            &admin,
            ImportMaterialRequest {
                key: key.clone(),
                token: params.token,
                wrapped,
                expires_at: None,
            },
        )
        .unwrap();
        acks.ack(&format!("imported {}", info.id));
        let plaintext = rng.bytes(8);
        let out = kms.encrypt(&app, &key, &ctx, &plaintext).unwrap();
        acks.ack(&format!(
            "encrypted {} {} {} {}",
            info.id,
            out.key_version,
            hex::encode(&out.ciphertext),
            hex::encode(&plaintext)
        ));
    }
    busy.store(false, Ordering::SeqCst);
    for p in pumps.into_iter().chain(noncers) {
        p.join().unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// The parent.

/// Creates the store once: init 1-of-1, unseal, register the app; the share goes to a file.
fn init_store(paths: &Paths) {
    let store: Arc<dyn Store> = Arc::new(SledStore::open(&paths.store).unwrap());
    let kms = TestKms::open(store, KmsConfig::default());
    let out = kms.init(1, 1, "admin").unwrap();
    fs::write(&paths.share, out.shares[0].expose_text()).unwrap();
    assert_eq!(
        kms.unseal_with(&out.shares[0]).unwrap(),
        UnsealProgress::Unsealed
    );
    let admin = kms.principal("admin").unwrap().unwrap();
    kms.add_principal(&admin, APP, Role::App { namespace: ns() })
        .unwrap();
}

fn spawn_child(dir: &Path, seed: u64, round: u64) -> Child {
    let stderr = File::create(dir.join(format!("child-{round}.stderr"))).unwrap();
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_writer", "--ignored", "--nocapture"])
        .env(CHILD_ENV, dir)
        .env(SEED_ENV, seed.to_string())
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap()
}

/// Drops an unterminated last line: it was being written when the kill came, so it was never
/// acknowledged. Returns whether one was dropped.
fn trim_torn_tail(acked: &Path) -> bool {
    let Ok(bytes) = fs::read(acked) else {
        return false;
    };
    if bytes.is_empty() || bytes.ends_with(b"\n") {
        return false;
    }
    let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let f = OpenOptions::new().write(true).open(acked).unwrap();
    f.set_len(u64::try_from(keep).unwrap()).unwrap();
    f.sync_all().unwrap();
    true
}

/// Tears the live log's last record the way a power loss in the middle of a write would: a
/// part of a whole record line (the last one again, as the next record would start), or zeros
/// where a page never reached the disk. Returns how many bytes were added after the last whole
/// line (what the open must cut, with whatever unfinished line the kill itself left).
fn tear_last_record(store: &Path, rng: &mut Rng) -> u64 {
    let dir = store.join(AUDIT_DIR);
    let mut segments: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("live-") && n.ends_with(".jsonl"))
        })
        .collect();
    segments.sort();
    let last = segments.pop().expect("the live log has a segment");
    let bytes = fs::read(&last).unwrap();
    // The last whole record line of this segment or, if it has none, of the one before.
    let whole = |text: &[u8]| -> Option<Vec<u8>> {
        let end = text.iter().rposition(|&b| b == b'\n')?;
        text[..end]
            .split(|&b| b == b'\n')
            .rev()
            .find(|l| l.starts_with(b"{\"type\":\"record\""))
            .map(<[u8]>::to_vec)
    };
    let line = whole(&bytes)
        .or_else(|| segments.last().and_then(|p| whole(&fs::read(p).unwrap())))
        .expect("a record line to tear");
    let torn = if rng.below(3) == 0 {
        vec![0u8; 1 + rng.index(4096)]
    } else {
        line[..1 + rng.index(line.len() - 1)].to_vec()
    };
    let mut file = OpenOptions::new().append(true).open(&last).unwrap();
    file.write_all(&torn).unwrap();
    file.sync_all().unwrap();
    torn.len() as u64
}

/// Checks the trail after a kill: it verifies with the audit key, every acknowledged record is
/// in it under its `seq`, and it goes on (a record appended now follows the last one). Returns
/// the number of records and of acknowledged ones.
fn verify_trail(kms: &TestKms, audited: &Path, why: &str) -> (u64, usize) {
    let keys = AuditKeys::new(
        kms.audit_public_keys()
            .unwrap()
            .into_iter()
            .map(|v| v.public_key)
            .collect(),
    );
    let log = audit_log(kms, "parent");
    let export = log
        .export()
        .unwrap_or_else(|e| panic!("{why}: export: {e}"));
    let verified =
        audit::verify(&export, &keys).unwrap_or_else(|e| panic!("{why}: the trail: {e}"));
    let mut seqs = BTreeMap::new();
    for line in export.lines() {
        if let Ok(Line::Record(r)) = serde_json::from_str::<Line>(line) {
            seqs.insert(r.request_id, r.seq);
        }
    }
    let text = fs::read_to_string(audited).unwrap_or_default();
    for line in text.lines() {
        let (rid, seq) = line.split_once(' ').unwrap();
        let seq: u64 = seq.parse().unwrap();
        assert_eq!(
            seqs.get(rid),
            Some(&seq),
            "{why}: acknowledged audit record {rid} (seq {seq}) is not in the trail"
        );
    }
    // The chain goes on from the last whole record.
    let next = log
        .append_blocking(audit_event(
            format!("parent-{}", verified.last_seq),
            Operation::Status,
            None,
        ))
        .unwrap_or_else(|e| panic!("{why}: append after the crash: {e}"));
    assert_eq!(next.seq, verified.last_seq + 1, "{why}");
    let again = audit::verify(&log.export().unwrap(), &keys).unwrap();
    assert_eq!(again.records, verified.records + 1, "{why}");
    log.stop();
    (again.records, text.lines().count())
}

/// Checks after a kill that every nonce the child acknowledged is still held: presented again at
/// its own timestamp (so within its window), each must be a replay. Returns how many were checked.
fn verify_nonces(kms: &TestKms, acked: &Path, why: &str) -> usize {
    let text = fs::read_to_string(acked).unwrap_or_default();
    let guard = kms.replay_guard();
    for (n, line) in text.lines().enumerate() {
        let at = format!("{why}, nonces.log line {}: {line}", n + 1);
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!(f.len(), 3, "{at}");
        let timestamp: u64 = f[1].parse().unwrap_or_else(|e| panic!("{at}: {e}"));
        let nonce = hex::decode(f[2]).unwrap_or_else(|e| panic!("{at}: {e}"));
        let again = guard
            .remember(NONCE_DOMAIN, f[0], &nonce, timestamp, timestamp)
            .unwrap_or_else(|e| panic!("{at}: {e}"));
        assert_eq!(
            again,
            Freshness::Replayed,
            "{at}: an acknowledged nonce was lost in the crash (its request could be replayed)"
        );
    }
    text.lines().count()
}

#[derive(Default, Debug)]
struct Tally {
    created: usize,
    rotated: usize,
    encrypted: usize,
    signed: usize,
    macs: usize,
    imported: usize,
}

impl Tally {
    fn total(&self) -> usize {
        self.created + self.rotated + self.encrypted + self.signed + self.macs + self.imported
    }
}

/// Checks every acknowledged line against the reopened KMS, and the store's own invariants.
fn verify(kms: &TestKms, admin: &Principal, app: &Principal, acked: &Path, why: &str) -> Tally {
    let text = fs::read_to_string(acked).unwrap_or_default();
    let ctx = context();
    let params = SignatureParams::default();
    let mut tally = Tally::default();
    // Highest acknowledged version per key.
    let mut acked_keys: BTreeMap<KeyId, (Purpose, KeySpec, u32)> = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let at = format!("{why}, acked.log line {}: {line:.120}", n + 1);
        let f: Vec<&str> = line.split(' ').collect();
        let id: KeyId = f[1].parse().unwrap_or_else(|e| panic!("{at}: {e}"));
        let key = KeyRef::Id(id);
        match f[0] {
            "created" => {
                tally.created += 1;
                let (purpose, spec) = (purpose_by_name(f[2]), spec_by_name(f[3]));
                let info = kms
                    .describe_key(admin, &key)
                    .unwrap_or_else(|e| panic!("{at}: acknowledged key is gone: {e}"));
                assert_eq!((info.purpose, info.spec), (purpose, spec), "{at}");
                assert_eq!(info.state, KeyState::Enabled, "{at}");
                assert_eq!(info.namespace, ns(), "{at}");
                if f[4] != "-" {
                    let by_alias = KeyRef::Alias(ns(), Alias::new(f[4]).unwrap());
                    let resolved = kms
                        .describe_key(admin, &by_alias)
                        .unwrap_or_else(|e| panic!("{at}: acknowledged alias is gone: {e}"));
                    assert_eq!(resolved.id, id, "{at}: alias names another key");
                    assert!(info.aliases.iter().any(|a| a.as_str() == f[4]), "{at}");
                }
                acked_keys.entry(id).or_insert((purpose, spec, 1));
            }
            "rotated" => {
                tally.rotated += 1;
                let version: u32 = f[2].parse().unwrap();
                let info = kms
                    .describe_key(admin, &key)
                    .unwrap_or_else(|e| panic!("{at}: rotated key is gone: {e}"));
                assert!(
                    info.current_version() >= version,
                    "{at}: acknowledged version {version} lost (store has {})",
                    info.current_version()
                );
                let versions: Vec<u32> = info.versions.iter().map(|v| v.version).collect();
                let expected: Vec<u32> = (1..=info.current_version()).collect();
                assert_eq!(versions, expected, "{at}: versions are not 1..=n");
                if let Some(k) = acked_keys.get_mut(&id) {
                    k.2 = k.2.max(version);
                }
            }
            "encrypted" => {
                tally.encrypted += 1;
                let version: u32 = f[2].parse().unwrap();
                let (ciphertext, plaintext) =
                    (hex::decode(f[3]).unwrap(), hex::decode(f[4]).unwrap());
                let out = kms
                    .decrypt(app, &ctx, &ciphertext)
                    .unwrap_or_else(|e| panic!("{at}: acknowledged ciphertext fails: {e}"));
                assert_eq!(out.key_id, id, "{at}");
                assert_eq!(out.key_version, version, "{at}");
                assert_eq!(out.plaintext.expose_secret(), plaintext, "{at}");
            }
            "signed" => {
                tally.signed += 1;
                let version: u32 = f[2].parse().unwrap();
                let (message, signature) = (hex::decode(f[3]).unwrap(), hex::decode(f[4]).unwrap());
                let out = kms
                    .verify(
                        app,
                        &key,
                        Message::Raw(&message),
                        &signature,
                        &params,
                        Some(version),
                    )
                    .unwrap_or_else(|e| panic!("{at}: verify fails: {e}"));
                assert!(out.valid, "{at}: acknowledged signature no longer verifies");
            }
            "mac" => {
                tally.macs += 1;
                let version: u32 = f[2].parse().unwrap();
                let (data, tag) = (hex::decode(f[3]).unwrap(), hex::decode(f[4]).unwrap());
                let out = kms
                    .verify_mac(app, &key, &data, &tag, Some(version))
                    .unwrap_or_else(|e| panic!("{at}: verify_mac fails: {e}"));
                assert!(out.valid, "{at}: acknowledged MAC no longer verifies");
            }
            "external" => {
                tally.created += 1;
                let info = kms
                    .describe_key(admin, &key)
                    .unwrap_or_else(|e| panic!("{at}: acknowledged key is gone: {e}"));
                assert_eq!(info.origin, Origin::Imported, "{at}");
            }
            "imported" => {
                tally.imported += 1;
                let info = kms
                    .describe_key(admin, &key)
                    .unwrap_or_else(|e| panic!("{at}: imported key is gone: {e}"));
                assert_eq!(
                    info.state,
                    KeyState::Enabled,
                    "{at}: acknowledged import lost"
                );
                assert!(info.import.is_some(), "{at}");
            }
            other => panic!("{at}: unknown record {other:?}"),
        }
    }

    // Every record decodes (list_keys fails on the first that does not) and every acknowledged
    // key is listed.
    let listed = kms
        .list_keys(admin, None)
        .unwrap_or_else(|e| panic!("{why}: list_keys: {e}"));
    let listed_ids: BTreeSet<KeyId> = listed.iter().map(|k| k.id).collect();
    for id in acked_keys.keys() {
        assert!(listed_ids.contains(id), "{why}: {id} is not listed");
    }
    assert_eq!(
        listed_ids.len(),
        listed.len(),
        "{why}: a key is listed twice"
    );

    // The multi-tree batches landed whole: a key index entry for every record and vice versa,
    // and an alias entry for every alias a record names.
    let store = kms.store();
    let index = store.scan_prefix(Tree::Meta, b"keyidx/").unwrap();
    let mut indexed = BTreeMap::new();
    for (k, v) in &index {
        let raw: [u8; 16] = k[b"keyidx/".len()..].try_into().unwrap();
        indexed.insert(KeyId(uuid_from(raw)), v.clone());
    }
    let mut records = 0;
    // Each key tree once: tokenize keys share the encrypt keys' tree.
    for tree in KeyRecord::KEY_TREES {
        for (k, v) in store.scan_prefix(tree, &[]).unwrap() {
            records += 1;
            let r = KeyRecord::decode(&v).unwrap_or_else(|e| panic!("{why}: record: {e}"));
            assert_eq!(
                k.as_slice(),
                r.id.as_bytes(),
                "{why}: record under wrong id"
            );
            assert!(
                indexed.contains_key(&r.id),
                "{why}: record {} has no key index entry",
                r.id
            );
            for alias in &r.aliases {
                let mut ak = r.namespace.as_str().as_bytes().to_vec();
                ak.push(0);
                ak.extend_from_slice(alias.as_str().as_bytes());
                let target = store.get(Tree::Aliases, &ak).unwrap();
                assert_eq!(
                    target.as_deref(),
                    Some(r.id.as_bytes().as_slice()),
                    "{why}: alias {alias} of {} is missing",
                    r.id
                );
            }
        }
    }
    assert_eq!(
        records,
        indexed.len(),
        "{why}: key index entries without a record"
    );

    // Imports landed whole: a key of origin imported has material, import facts and a spent
    // token together, or none of them.
    let mut spent: BTreeMap<String, usize> = BTreeMap::new();
    for (_, v) in store.scan_prefix(Tree::Meta, b"import-token/").unwrap() {
        let token: serde_json::Value = serde_json::from_slice(&v).unwrap();
        let key = token["key"].as_str().unwrap().to_owned();
        if !token["used_at"].is_null() {
            assert_eq!(
                token["wrapped_private"], "",
                "{why}: a spent token kept its key"
            );
            *spent.entry(key).or_default() += 1;
        }
    }
    for k in listed.iter().filter(|k| k.origin == Origin::Imported) {
        let at = format!("{why}, imported key {}", k.id);
        let has_material = !k.versions.is_empty();
        assert_eq!(
            has_material,
            k.import.is_some(),
            "{at}: material without facts"
        );
        assert_eq!(
            has_material,
            k.state != KeyState::PendingImport,
            "{at}: state {} with material {has_material}",
            k.state
        );
        assert_eq!(
            spent.get(&k.id.to_string()).copied().unwrap_or(0),
            usize::from(has_material),
            "{at}: the token and the material disagree"
        );
    }

    // Every key, acknowledged or not (the kill may land between the store's return and the
    // acknowledgement), is describable, and every key of the app's namespace is usable with its
    // newest version (keys the KMS keeps for itself, elsewhere, are out of the app's reach).
    for k in &listed {
        let key = KeyRef::Id(k.id);
        let at = format!("{why}, key {} ({} {})", k.id, k.purpose, k.spec);
        kms.describe_key(admin, &key)
            .unwrap_or_else(|e| panic!("{at}: describe: {e}"));
        if k.namespace != ns() {
            continue;
        }
        if let Some((_, _, v)) = acked_keys.get(&k.id) {
            assert!(k.current_version() >= *v, "{at}: version went back");
        }
        if k.state == KeyState::PendingImport {
            // Created but killed before its import landed: nothing to use yet.
            continue;
        }
        match k.purpose {
            Purpose::Encrypt => {
                let out = kms
                    .encrypt(app, &key, &ctx, b"still usable")
                    .unwrap_or_else(|e| panic!("{at}: encrypt: {e}"));
                assert_eq!(out.key_version, k.current_version(), "{at}");
                let back = kms.decrypt(app, &ctx, &out.ciphertext).unwrap();
                assert_eq!(back.plaintext.expose_secret(), b"still usable", "{at}");
            }
            Purpose::Sign => {
                let out = kms
                    .sign(app, &key, Message::Raw(b"still usable"), &params)
                    .unwrap_or_else(|e| panic!("{at}: sign: {e}"));
                let ok = kms
                    .verify(
                        app,
                        &key,
                        Message::Raw(b"still usable"),
                        &out.signature,
                        &params,
                        None,
                    )
                    .unwrap();
                assert!(ok.valid, "{at}");
            }
            Purpose::Mac => {
                let out = kms
                    .generate_mac(app, &key, b"still usable")
                    .unwrap_or_else(|e| panic!("{at}: mac: {e}"));
                let ok = kms
                    .verify_mac(app, &key, b"still usable", &out.signature, None)
                    .unwrap();
                assert!(ok.valid, "{at}");
            }
            Purpose::AsymmetricDecrypt
            | Purpose::Password
            | Purpose::Pepper
            | Purpose::Tokenize => {
                panic!("{at}: the child creates no such key")
            }
        }
    }
    tally
}

fn uuid_from(raw: [u8; 16]) -> uuid::Uuid {
    uuid::Uuid::from_bytes(raw)
}

fn wait_for(path: &Path, child: &mut Child, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if path.exists() {
            return true;
        }
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        thread::sleep(Duration::from_millis(5));
    }
    false
}

#[test]
fn crash_consistency_under_sigkill() {
    let seed = fresh_seed();
    eprintln!("crash consistency: seed {seed} (rerun with {SEED_ENV}={seed})");
    let started = Instant::now();
    let mut rng = Rng(seed);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let paths = Paths::new(dir);
    init_store(&paths);

    let mut previous = 0;
    let mut progressed = 0;
    let mut torn = 0;
    let mut tally = Tally::default();
    let (mut records, mut audited, mut cut_rounds, mut torn_by_us) = (0, 0, 0, 0);
    let mut nonces = 0;
    for round in 1..=ROUNDS {
        let why = format!("seed {seed}, round {round}");
        let _ = fs::remove_file(&paths.ready);
        let mut child = spawn_child(dir, rng.next(), round);
        let early = round % EARLY_KILL_EVERY == 0;
        let delay = if early {
            // Anywhere from exec to the first writes, through sled's recovery.
            Duration::from_millis(rng.below(150))
        } else {
            let ready = wait_for(&paths.ready, &mut child, READY_WAIT);
            let stderr = fs::read_to_string(dir.join(format!("child-{round}.stderr")));
            assert!(
                ready,
                "{why}: the child never became ready; stderr:\n{}",
                stderr.unwrap_or_default()
            );
            Duration::from_millis(50 + rng.below(351))
        };
        thread::sleep(delay);
        let exited = child.try_wait().unwrap();
        assert!(
            exited.is_none(),
            "{why}: the child exited by itself ({exited:?}) before the kill; stderr:\n{}",
            fs::read_to_string(dir.join(format!("child-{round}.stderr"))).unwrap_or_default()
        );
        child.kill().unwrap(); // SIGKILL on Unix
        let status = child.wait().unwrap();
        assert!(!status.success(), "{why}: {status:?}");
        if trim_torn_tail(&paths.acked) {
            torn += 1;
        }
        trim_torn_tail(&paths.audited);
        trim_torn_tail(&paths.nonces);
        let added = (round % 3 == 0 && paths.store.join(AUDIT_DIR).exists())
            .then(|| tear_last_record(&paths.store, &mut rng));

        let (kms, admin, app, cut) = open_unsealed_recovering(&paths);
        if let Some(added) = added {
            torn_by_us += 1;
            let cut = cut.unwrap_or(0);
            assert!(
                cut >= added,
                "{why}: {added} torn bytes were added, the open cut {cut}"
            );
        }
        if cut.is_some() {
            cut_rounds += 1;
        }
        tally = verify(&kms, &admin, &app, &paths.acked, &why);
        (records, audited) = verify_trail(&kms, &paths.audited, &why);
        nonces = verify_nonces(&kms, &paths.nonces, &why);
        if tally.total() > previous {
            progressed += 1;
        }
        previous = tally.total();
        drop(kms);
    }
    let elapsed = started.elapsed();
    eprintln!(
        "crash consistency: seed {seed}: {ROUNDS} rounds in {elapsed:?}, {progressed} with \
         progress, {torn} torn ack lines dropped; acknowledged {tally:?}; audit trail: \
         {records} records, {audited} acknowledged, a torn end cut in {cut_rounds} rounds \
         ({torn_by_us} torn on purpose); {nonces} nonces acknowledged, all still held"
    );
    // A run where the child never got to write proves nothing.
    assert!(
        progressed >= usize::try_from(ROUNDS / 4).unwrap(),
        "seed {seed}: only {progressed} of {ROUNDS} rounds acknowledged anything"
    );
    assert!(tally.created >= 10 && tally.rotated >= 10, "{tally:?}");
    assert!(tally.imported >= 5, "{tally:?}");
    assert!(
        audited >= 200,
        "only {audited} audit records were acknowledged"
    );
    assert!(nonces >= 200, "only {nonces} nonces were acknowledged");
    assert!(
        torn_by_us >= 4 && cut_rounds >= torn_by_us,
        "{cut_rounds} {torn_by_us}"
    );
}
