//! The TLCP key schedule (GB/T 38636-2020 §6.5): the TLS 1.2 PRF P_hash with HMAC-SM3.
//!
//! ```text
//! master_secret = PRF(pre_master_secret, "master secret", client_random ‖ server_random)[0..48]
//! key_block     = PRF(master_secret, "key expansion", server_random ‖ client_random)
//! verify_data   = PRF(master_secret, "client finished" | "server finished", SM3(handshake))[0..12]
//! ```

use hmac::{KeyInit, Mac};
use sm3::Sm3;
use zeroize::Zeroizing;

type HmacSm3 = hmac::Hmac<Sm3>;

/// Length of the master secret (and of the pre-master secret).
pub(crate) const MASTER_LEN: usize = 48;
/// Length of Finished.verify_data.
pub(crate) const VERIFY_DATA_LEN: usize = 12;

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length; the error branch cannot happen.
    let mut mac =
        HmacSm3::new_from_slice(key).unwrap_or_else(|_| HmacSm3::new(&Default::default()));
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// P_SM3(secret, label ‖ seed) filled into `out`.
pub(crate) fn prf(secret: &[u8], label: &[u8], seed: &[&[u8]], out: &mut [u8]) {
    let mut label_seed =
        Vec::with_capacity(label.len() + seed.iter().map(|s| s.len()).sum::<usize>());
    label_seed.extend_from_slice(label);
    for s in seed {
        label_seed.extend_from_slice(s);
    }
    // A(1) = HMAC(secret, label ‖ seed); A(i+1) = HMAC(secret, A(i)).
    let mut a = Zeroizing::new(hmac(secret, &[&label_seed]));
    for chunk in out.chunks_mut(32) {
        let block = Zeroizing::new(hmac(secret, &[a.as_slice(), &label_seed]));
        chunk.copy_from_slice(&block[..chunk.len()]);
        *a = hmac(secret, &[a.as_slice()]);
    }
}

pub(crate) fn master_secret(
    pre_master: &[u8],
    client_random: &[u8; 32],
    server_random: &[u8; 32],
) -> Zeroizing<[u8; MASTER_LEN]> {
    let mut out = Zeroizing::new([0u8; MASTER_LEN]);
    prf(
        pre_master,
        b"master secret",
        &[client_random, server_random],
        out.as_mut_slice(),
    );
    out
}

pub(crate) fn key_block(
    master: &[u8; MASTER_LEN],
    client_random: &[u8; 32],
    server_random: &[u8; 32],
    len: usize,
) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(vec![0u8; len]);
    prf(
        master,
        b"key expansion",
        &[server_random, client_random],
        &mut out,
    );
    out
}

/// Whose Finished message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sender {
    Client,
    Server,
}

pub(crate) fn verify_data(
    master: &[u8; MASTER_LEN],
    sender: Sender,
    handshake_hash: &[u8],
) -> [u8; VERIFY_DATA_LEN] {
    let label: &[u8] = match sender {
        Sender::Client => b"client finished",
        Sender::Server => b"server finished",
    };
    let mut out = [0u8; VERIFY_DATA_LEN];
    prf(master, label, &[handshake_hash], &mut out);
    out
}

/// SM3 of `data` (the transcript hash and the SM2 helpers use it).
pub(crate) fn sm3(parts: &[&[u8]]) -> [u8; 32] {
    use sm3::Digest as _;
    let mut h = Sm3::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Values computed independently with Python's `hmac` over OpenSSL's SM3
    /// (`hmac.new(secret, msg, "sm3")`), P_hash written out by hand.
    #[test]
    fn prf_known_answer() {
        let mut out = [0u8; 80];
        prf(b"secret", b"test label", &[b"seed"], &mut out);
        assert_eq!(hex::encode(out), PRF_KAT);
    }

    const PRF_KAT: &str = "29b546712d24e822baa55c9b62718b6670bb9d766b8b84f14a533024fc7e40976997d1efdfb146dd7c83ff94cf0cc8732709053ba3d1c7f3550962ff821ead74c63a439a366452ef85a2182d2e4c3795";
}
