//! The envelope benchmark of issue 21 item 2 (not a test): seal and open 1 GiB (by default)
//! streamed through `kms_client::envelope` on one core, against the raw AEAD over the same
//! bytes in the same frame size, alternating rounds; and the process's peak RSS.
//!
//! ```sh
//! cargo run --release -p kms-client --example envelope_bench -- [MiB] [rounds]
//! ```
//!
//! Prints one JSON line per algorithm: MiB/s of raw, seal (generated input, discarded output)
//! and open (from a file it sealed first, through the page cache), the medians, their ratios to
//! raw, and VmHWM from `/proc/self/status` (the peak RSS: nothing is held whole).

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::time::Instant;

use aes_gcm::aead::array::Array;
use aes_gcm::{AeadInOut, Aes256Gcm, AesGcm, KeyInit};
use kms_client::envelope::{self, Algorithm, DEFAULT_FRAME_LEN, Header};
use sm4::Sm4;
use sm4::cipher::consts::U12;

/// Yields `left` bytes of a fixed pattern without holding them.
struct Pattern {
    left: u64,
}

impl Read for Pattern {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = usize::try_from(self.left.min(buf.len() as u64)).unwrap_or(buf.len());
        for (i, b) in buf[..n].iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Counts what is written and drops it; keeps the first `keep` bytes (to open later).
struct Sink {
    written: u64,
    kept: Vec<u8>,
    keep: usize,
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.kept.len() < self.keep {
            let take = (self.keep - self.kept.len()).min(buf.len());
            self.kept.extend_from_slice(&buf[..take]);
        }
        self.written += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn raw(alg: Algorithm, key: &[u8], total: u64) -> f64 {
    let frame = DEFAULT_FRAME_LEN as usize;
    let mut buf = vec![0u8; frame];
    let mut src = Pattern { left: total };
    let started = Instant::now();
    let mut index = 0u64;
    loop {
        let n = src.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&index.to_be_bytes());
        let tag = match alg {
            Algorithm::Sm4Gcm => AesGcm::<Sm4, U12>::new_from_slice(key)
                .unwrap()
                .encrypt_inout_detached(&Array::from(nonce), b"", (&mut buf[..n]).into())
                .unwrap()
                .to_vec(),
            Algorithm::Aes256Gcm => Aes256Gcm::new_from_slice(key)
                .unwrap()
                .encrypt_inout_detached(&Array::from(nonce), b"", (&mut buf[..n]).into())
                .unwrap()
                .to_vec(),
        };
        std::hint::black_box(tag);
        index += 1;
    }
    mib_per_s(total, started)
}

fn mib_per_s(bytes: u64, since: Instant) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / since.elapsed().as_secs_f64()
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mib: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1024);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let total = mib * 1024 * 1024;
    let context = BTreeMap::from([("file".to_owned(), "bench".to_owned())]);
    for (alg, key_len) in [(Algorithm::Sm4Gcm, 16), (Algorithm::Aes256Gcm, 32)] {
        let key = vec![0x42u8; key_len];
        let (mut raws, mut seals, mut opens) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            raws.push(raw(alg, &key, total));

            let started = Instant::now();
            let mut sink = Sink {
                written: 0,
                kept: Vec::new(),
                keep: 0,
            };
            envelope::seal(
                alg,
                &key,
                b"wrapped",
                &context,
                DEFAULT_FRAME_LEN,
                Pattern { left: total },
                &mut sink,
            )
            .unwrap();
            seals.push(mib_per_s(total, started));

            // Open what was sealed to a file (as an application does), read back through a
            // buffered reader from the page cache.
            let path = std::env::temp_dir().join(format!("envelope-bench-{}", std::process::id()));
            let file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
            envelope::seal(
                alg,
                &key,
                b"wrapped",
                &context,
                DEFAULT_FRAME_LEN,
                Pattern { left: total },
                file,
            )
            .unwrap();
            let mut reader = std::io::BufReader::new(std::fs::File::open(&path).unwrap());
            let started = Instant::now();
            let header = Header::read_from(&mut reader).unwrap();
            let mut out = Sink {
                written: 0,
                kept: Vec::new(),
                keep: 0,
            };
            envelope::open(&header, &key, &mut reader, &mut out).unwrap();
            opens.push(mib_per_s(total, started));
            std::fs::remove_file(&path).unwrap();
            assert_eq!(out.written, total);
        }
        let (r, s, o) = (median(raws), median(seals), median(opens));
        println!(
            "{{\"algorithm\":\"{}\",\"mib\":{mib},\"rounds\":{rounds},\"raw_mib_s\":{r:.0},\"seal_mib_s\":{s:.0},\"open_mib_s\":{o:.0},\"seal_to_raw\":{:.3},\"open_to_raw\":{:.3},\"peak_rss_kib\":{}}}",
            alg.name(),
            s / r,
            o / r,
            peak_rss_kib()
        );
    }
}
