//! Searching bytes for secrets in every spelling a program might print them in: raw, hex (both
//! cases), base64 (standard and URL-safe, at each of the three alignments a secret can have inside
//! a longer base64 text) and Rust's `Debug` of a byte slice (`[12, 34, …]`). Long secrets (RSA
//! private keys) are searched as overlapping windows, so that a part of one is found too; windows
//! that also occur in a public key are left out (an RSA private key contains its modulus).

use std::collections::HashMap;

/// A spelling of a secret to search for.
pub(crate) struct Needle {
    pub(crate) label: String,
    pub(crate) bytes: Vec<u8>,
}

const B64_STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const B64_URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
/// Secrets longer than this are searched as windows of this size.
const WINDOW: usize = 32;
const STRIDE: usize = 8;

pub(crate) fn base64(alphabet: &[u8; 64], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(alphabet[((n >> (18 - 6 * i)) & 63) as usize]);
        }
    }
    out
}

pub(crate) fn b64_std(data: &[u8]) -> Vec<u8> {
    base64(B64_STD, data)
}

pub(crate) fn b64_url(data: &[u8]) -> Vec<u8> {
    base64(B64_URL, data)
}

/// The base64 characters that encode `data` wherever it sits in a longer base64 text: for each
/// of the three alignments, the characters that depend on `data` alone.
fn base64_forms(data: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for shift in 0..3 {
        let mut padded = vec![0u8; shift];
        padded.extend_from_slice(data);
        for (name, alphabet) in [("base64", B64_STD), ("base64url", B64_URL)] {
            let enc = base64(alphabet, &padded);
            // Skip the characters mixing in the zero prefix, and the last group (it may mix in
            // whatever follows).
            let start = if shift == 0 { 0 } else { 4 };
            let end = (padded.len() / 3) * 4;
            if end > start + 8 {
                out.push((format!("{name}@{shift}"), enc[start..end].to_vec()));
            }
        }
    }
    out
}

/// `[12, 34, …]` without the brackets: how `{:?}` prints a `Vec<u8>` or `&[u8]`.
fn debug_list(data: &[u8]) -> Vec<u8> {
    data.iter()
        .map(u8::to_string)
        .collect::<Vec<_>>()
        .join(", ")
        .into_bytes()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Adds every spelling of `secret` (or of its windows, if it is long) to `out`.
pub(crate) fn needles_for(label: &str, secret: &[u8], public: &[Vec<u8>], out: &mut Vec<Needle>) {
    assert!(secret.len() >= 8, "{label}: too short to search for");
    let pieces: Vec<(String, &[u8])> = if secret.len() <= WINDOW + WINDOW / 2 {
        vec![(label.to_owned(), secret)]
    } else {
        (0..=secret.len() - WINDOW)
            .step_by(STRIDE)
            .map(|i| {
                (
                    format!("{label}[{i}..{}]", i + WINDOW),
                    &secret[i..i + WINDOW],
                )
            })
            .filter(|(_, w)| !public.iter().any(|p| contains(p, w)))
            .collect()
    };
    assert!(!pieces.is_empty(), "{label}: nothing private to search for");
    for (name, piece) in pieces {
        let mut forms = vec![
            ("raw".to_owned(), piece.to_vec()),
            ("hex".to_owned(), hex::encode(piece).into_bytes()),
            ("HEX".to_owned(), hex::encode_upper(piece).into_bytes()),
            ("debug list".to_owned(), debug_list(piece)),
        ];
        forms.extend(base64_forms(piece));
        for (form, bytes) in forms {
            out.push(Needle {
                label: format!("{name} ({form})"),
                bytes,
            });
        }
    }
}

/// Finds every needle in one pass over a haystack: a bitmap of hashed 4-byte prefixes filters
/// the positions, a map from prefix to needles confirms.
pub(crate) struct Scanner<'a> {
    needles: &'a [Needle],
    by_prefix: HashMap<u32, Vec<usize>>,
    bitmap: Vec<u64>,
}

const BITMAP_BITS: u32 = 22;

fn prefix_hash(p: u32) -> usize {
    (p.wrapping_mul(0x9E37_79B1) >> (32 - BITMAP_BITS)) as usize
}

impl<'a> Scanner<'a> {
    pub(crate) fn new(needles: &'a [Needle]) -> Self {
        let mut by_prefix: HashMap<u32, Vec<usize>> = HashMap::new();
        let mut bitmap = vec![0u64; (1 << BITMAP_BITS) / 64];
        for (i, n) in needles.iter().enumerate() {
            assert!(n.bytes.len() >= 4, "{}: too short", n.label);
            let p = u32::from_le_bytes(n.bytes[..4].try_into().unwrap());
            by_prefix.entry(p).or_default().push(i);
            let h = prefix_hash(p);
            bitmap[h / 64] |= 1 << (h % 64);
        }
        Self {
            needles,
            by_prefix,
            bitmap,
        }
    }

    /// The labels of the needles found in `hay`, with their offsets.
    pub(crate) fn scan(&self, hay: &[u8]) -> Vec<(&'a str, usize)> {
        let mut hits = Vec::new();
        if hay.len() < 4 {
            return hits;
        }
        for i in 0..=hay.len() - 4 {
            let p = u32::from_le_bytes([hay[i], hay[i + 1], hay[i + 2], hay[i + 3]]);
            let h = prefix_hash(p);
            if self.bitmap[h / 64] & (1 << (h % 64)) == 0 {
                continue;
            }
            if let Some(list) = self.by_prefix.get(&p) {
                for &n in list {
                    if hay[i..].starts_with(&self.needles[n].bytes) {
                        hits.push((self.needles[n].label.as_str(), i));
                    }
                }
            }
        }
        hits
    }
}

#[test]
fn the_scanner_finds_every_spelling_and_nothing_else() {
    use sha2::Digest;
    let bytes = |seed: &str, len: usize| -> Vec<u8> {
        (0..)
            .flat_map(|i: u32| sha2::Sha256::digest(format!("{seed}{i}")).to_vec())
            .take(len)
            .collect()
    };
    let secret = bytes("short", 40);
    let long = bytes("long", 300);
    let mut needles = Vec::new();
    needles_for("short", &secret, &[], &mut needles);
    needles_for("long", &long, &[long[..100].to_vec()], &mut needles);
    let scanner = Scanner::new(&needles);
    let mut embeds: Vec<(String, Vec<u8>)> = vec![
        ("raw".into(), secret.clone()),
        ("hex".into(), hex::encode(&secret).into_bytes()),
        ("HEX".into(), hex::encode_upper(&secret).into_bytes()),
        ("debug".into(), format!("{secret:?}").into_bytes()),
    ];
    for prefix in 0..3 {
        let mut data = bytes("prefix", prefix);
        data.extend_from_slice(&secret);
        data.extend_from_slice(&bytes("suffix", 2));
        embeds.push((format!("base64 +{prefix}"), b64_std(&data)));
        embeds.push((format!("base64url +{prefix}"), b64_url(&data)));
    }
    for (what, e) in embeds {
        let mut hay = bytes("before", 1000);
        hay.extend_from_slice(&e);
        hay.extend_from_slice(&bytes("after", 1000));
        assert!(
            scanner
                .scan(&hay)
                .iter()
                .any(|(l, _)| l.starts_with("short")),
            "missed the {what} form"
        );
    }
    // A private slice of a long secret, past its public part, is found on its own.
    let mut hay = bytes("noise", 500);
    hay.extend_from_slice(&long[150..190]);
    assert!(
        scanner
            .scan(&hay)
            .iter()
            .any(|(l, _)| l.starts_with("long"))
    );
    // Its public part alone is not a needle, and noise matches nothing.
    let mut hay = bytes("noise", 500);
    hay.extend_from_slice(&long[..100]);
    assert!(
        !scanner
            .scan(&hay)
            .iter()
            .any(|(l, _)| l.starts_with("long"))
    );
    assert!(scanner.scan(&bytes("more noise", 5000)).is_empty());
}
