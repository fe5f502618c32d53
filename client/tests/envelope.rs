//! The streaming envelope (issue 21 item 2): round trips at every frame boundary, each tamper
//! case refused with the error that names it, and the independent Python reference decryptor
//! (`examples/envelope/decrypt.py`, `cryptography`) opening what this crate wrote.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use kms_client::envelope::{self, Algorithm, EnvelopeError, Header};

const FRAME: u32 = 64;

fn context() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("file".to_owned(), "q3-report.pdf".to_owned()),
        ("tenant".to_owned(), "payments".to_owned()),
    ])
}

fn key(algorithm: Algorithm, seed: u8) -> Vec<u8> {
    (0..algorithm.key_len())
        .map(|i| seed.wrapping_add(u8::try_from(i).unwrap()))
        .collect()
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| u8::try_from(i % 251).unwrap()).collect()
}

fn seal(algorithm: Algorithm, key: &[u8], plain: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let n = envelope::seal(
        algorithm,
        key,
        b"wrapped data key",
        &context(),
        FRAME,
        plain,
        &mut out,
    )
    .unwrap();
    assert_eq!(n, u64::try_from(plain.len()).unwrap());
    out
}

fn open(key: &[u8], sealed: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
    let mut input = sealed;
    let header = Header::read_from(&mut input)?;
    let mut out = Vec::new();
    envelope::open(&header, key, input, &mut out)?;
    Ok(out)
}

fn header_len(sealed: &[u8]) -> usize {
    let mut input = sealed;
    Header::read_from(&mut input).unwrap();
    sealed.len() - input.len()
}

const FULL: usize = FRAME as usize + 16;

#[test]
fn round_trips_at_every_frame_boundary_for_both_algorithms() {
    for algorithm in [Algorithm::Sm4Gcm, Algorithm::Aes256Gcm] {
        let k = key(algorithm, 1);
        for len in [0, 1, 63, 64, 65, 128, 1000] {
            let plain = data(len);
            let sealed = seal(algorithm, &k, &plain);
            // Full frames, then a final frame shorter than a full one (empty after an exact
            // multiple).
            let frames = len / FRAME as usize + 1;
            assert_eq!(
                sealed.len() - header_len(&sealed),
                len + frames * 16,
                "{algorithm:?} {len}"
            );
            assert_eq!(open(&k, &sealed).unwrap(), plain, "{algorithm:?} {len}");
        }
    }
}

#[test]
fn every_tampering_is_refused_with_its_error() {
    let k = key(Algorithm::Sm4Gcm, 9);
    let plain = data(300); // frames 0..3 full, frame 4 final (44 bytes)
    let sealed = seal(Algorithm::Sm4Gcm, &k, &plain);
    let h = header_len(&sealed);
    let frame = |i: usize| h + i * FULL..(h + (i + 1) * FULL).min(sealed.len());

    // The last frame cut off entirely: the stream ends after full frames.
    let cut = &sealed[..frame(4).start];
    assert!(matches!(
        open(&k, cut),
        Err(EnvelopeError::Truncated { frames: 4 })
    ));
    // The last frame cut short: it no longer authenticates.
    let cut = &sealed[..sealed.len() - 5];
    assert!(matches!(
        open(&k, cut),
        Err(EnvelopeError::Frame { index: 4 })
    ));
    // A middle frame dropped: the next one sits at the wrong index.
    let mut dropped = sealed[..frame(1).start].to_vec();
    dropped.extend_from_slice(&sealed[frame(2).start..]);
    assert!(matches!(
        open(&k, &dropped),
        Err(EnvelopeError::Frame { index: 1 })
    ));
    // Two frames swapped.
    let mut swapped = sealed[..frame(1).start].to_vec();
    swapped.extend_from_slice(&sealed[frame(2)]);
    swapped.extend_from_slice(&sealed[frame(1)]);
    swapped.extend_from_slice(&sealed[frame(3).start..]);
    assert!(matches!(
        open(&k, &swapped),
        Err(EnvelopeError::Frame { index: 1 })
    ));
    // A frame from another message under the same data key (its own salt, so its own frame
    // key): refused.
    let other = seal(Algorithm::Sm4Gcm, &k, &data(300));
    let mut mixed = sealed[..frame(2).start].to_vec();
    mixed.extend_from_slice(&other[frame(2)]);
    mixed.extend_from_slice(&sealed[frame(3).start..]);
    assert!(matches!(
        open(&k, &mixed),
        Err(EnvelopeError::Frame { index: 2 })
    ));
    // A flipped header byte (in the salt) and a changed context: every frame's AAD changes.
    let mut flipped = sealed.clone();
    flipped[20] ^= 1;
    assert!(matches!(
        open(&k, &flipped),
        Err(EnvelopeError::Frame { index: 0 })
    ));
    let ctx_at = sealed
        .windows(b"q3-report".len())
        .position(|w| w == b"q3-report")
        .unwrap();
    let mut changed = sealed.clone();
    changed[ctx_at] = b'Q';
    assert!(matches!(
        open(&k, &changed),
        Err(EnvelopeError::Frame { index: 0 })
    ));
    // A flipped payload byte, the wrong data key, and bytes after the final frame.
    let mut payload = sealed.clone();
    payload[frame(3).start + 3] ^= 0x80;
    assert!(matches!(
        open(&k, &payload),
        Err(EnvelopeError::Frame { index: 3 })
    ));
    assert!(matches!(
        open(&key(Algorithm::Sm4Gcm, 10), &sealed),
        Err(EnvelopeError::Frame { index: 0 })
    ));
    // Bytes appended after the final frame become part of it (a final frame is any frame
    // shorter than a full one), so it no longer authenticates.
    for extra in [1, 100] {
        let mut trailing = sealed.clone();
        trailing.extend(std::iter::repeat_n(0u8, extra));
        assert!(
            matches!(open(&k, &trailing), Err(EnvelopeError::Frame { index: 4 })),
            "{extra} bytes appended"
        );
    }
    // Headers that are not ours or are cut.
    assert!(matches!(
        open(&k, b"KMSB\x01"),
        Err(EnvelopeError::NotAnEnvelope)
    ));
    assert!(matches!(
        open(&k, &sealed[..10]),
        Err(EnvelopeError::Header(_))
    ));
    let mut version = sealed.clone();
    version[4] = 2;
    assert!(matches!(open(&k, &version), Err(EnvelopeError::Version(2))));
    assert!(matches!(
        open(&key(Algorithm::Aes256Gcm, 9), &sealed),
        Err(EnvelopeError::KeyLength {
            got: 32,
            want: 16,
            ..
        })
    ));
    // The untouched message still opens.
    assert_eq!(open(&k, &sealed).unwrap(), plain);
}

#[test]
fn frame_lengths_outside_the_bounds_are_refused() {
    let k = key(Algorithm::Aes256Gcm, 3);
    for bad in [0, 15, envelope::MAX_FRAME_LEN + 1] {
        let r = envelope::seal(
            Algorithm::Aes256Gcm,
            &k,
            b"w",
            &context(),
            bad,
            &b"x"[..],
            &mut Vec::new(),
        );
        assert!(matches!(r, Err(EnvelopeError::FrameLen)), "{bad}");
    }
}

fn reference_decryptor() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/envelope/decrypt.py")
}

/// The Python reference decryptor, written from docs/ENVELOPE.md with `cryptography`, opens
/// what this crate sealed, for both algorithms, and refuses a truncated message.
#[test]
fn the_python_reference_decryptor_opens_what_this_crate_sealed() {
    let dir = tempfile::tempdir().unwrap();
    for algorithm in [Algorithm::Sm4Gcm, Algorithm::Aes256Gcm] {
        let k = key(algorithm, 42);
        for len in [0, 64, 1000] {
            let plain = data(len);
            let sealed = seal(algorithm, &k, &plain);
            let path = dir.path().join("msg.kmsf");
            std::fs::write(&path, &sealed).unwrap();
            let out = Command::new("python3")
                .arg(reference_decryptor())
                .args(["open", path.to_str().unwrap(), &hex::encode(&k)])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{algorithm:?} {len}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(out.stdout, plain, "{algorithm:?} {len}");

            let out = Command::new("python3")
                .arg(reference_decryptor())
                .args(["header", path.to_str().unwrap()])
                .output()
                .unwrap();
            let text = String::from_utf8(out.stdout).unwrap();
            assert!(text.contains("\"q3-report.pdf\""), "{text}");
            assert!(text.contains(algorithm.name()), "{text}");
        }
        // 200 bytes: three full frames and an 8-byte final frame (24 bytes with its tag).
        let sealed = seal(algorithm, &k, &data(200));
        let cut = dir.path().join("cut.kmsf");
        for (removed, says) in [(5, "frame 3 does not authenticate"), (24, "truncated")] {
            std::fs::write(&cut, &sealed[..sealed.len() - removed]).unwrap();
            let out = Command::new("python3")
                .arg(reference_decryptor())
                .args(["open", cut.to_str().unwrap(), &hex::encode(&k)])
                .output()
                .unwrap();
            assert!(!out.status.success());
            assert!(
                String::from_utf8_lossy(&out.stderr).contains(says),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
