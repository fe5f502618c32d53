//! `cargo run --release --manifest-path bench/sled_growth/Cargo.toml -- RECORDS [prune]`
//!
//! Appends RECORDS values of 420 bytes (about an audit record) under big-endian sequence keys, in
//! batches of 32 plus a tail key, flushing every 3,200 records, with the KMS's 64 MiB sled cache;
//! prints RSS and size on disk every 200,000 records. With `prune`, records older than the newest
//! 100,000 are deleted as it goes (what archiving the audit trail out of the hot store would do).

use std::time::Instant;

const KEEP: u64 = 100_000;
const BATCH: u64 = 32;

fn rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096 / (1024 * 1024))
}

fn key(seq: u64) -> Vec<u8> {
    [b"r".as_slice(), &seq.to_be_bytes()].concat()
}

fn main() -> sled::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let total: u64 = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(2_000_000);
    let prune = args.get(2).is_some_and(|a| a == "prune");
    let dir = std::env::temp_dir().join(format!("sled-growth-{}", std::process::id()));
    let db = sled::Config::new()
        .path(&dir)
        .cache_capacity(64 * 1024 * 1024)
        .open()?;
    let tree = db.open_tree("audit")?;
    let record = vec![b'x'; 420];
    let started = Instant::now();
    let mut seq = 0;
    while seq < total {
        let mut batch = sled::Batch::default();
        for _ in 0..BATCH {
            seq += 1;
            batch.insert(key(seq), record.clone());
        }
        batch.insert(b"tail".to_vec(), seq.to_be_bytes().to_vec());
        tree.apply_batch(batch)?;
        if prune && seq > KEEP {
            for old in (seq - KEEP + 1 - BATCH)..=(seq - KEEP) {
                tree.remove(key(old))?;
            }
        }
        if seq % 3_200 == 0 {
            db.flush()?;
        }
        if seq % 200_000 == 0 {
            println!(
                "{seq} records, {:.0} s: RSS {} MiB, on disk {} MiB",
                started.elapsed().as_secs_f64(),
                rss_mib(),
                db.size_on_disk()? >> 20
            );
        }
    }
    drop(tree);
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
