//! Request verification (`kms.v1.RequestVerification`, issue 22 item 3) over real mutual TLS,
//! judged from outside: the partner is OpenSSL. This file builds the canonical string itself,
//! from docs/FORMATS.md ("The signed request"), with OpenSSL's SM3 and SHA-256 for the body
//! digest, and OpenSSL signs it: SM2 (default ID) and RSA-PSS-SHA-256 with keys OpenSSL made and
//! the KMS holds only the public half of (`ImportPublicKey`), HMAC-SM3 with a key imported
//! wrapped by OpenSSL. Then every verdict, in its order, and its audit flag; the trail never
//! holds the body, the nonce or the signature.

use std::time::{SystemTime, UNIX_EPOCH};

use kms_proto::v1::{self, Purpose, RequestVerdict};
use kms_tests::pki::subjects::APP_NS;
use kms_tests::world::World;
use tonic::Code;

use crate::common::{Scratch, audit_records, expect_err, import_known_key, openssl_ok};

/// A 32-byte HMAC-SM3 key the partner and the KMS share.
const MAC_KEY_HEX: &str = "8f3a5c7e9b1d2f4061728394a5b6c7d8e9fa0b1c2d3e4f5061728394a5b6c7d8";
const BODY: &[u8] = br#"{"from":"6222020000000001","to":"6222020000000002","amount":"100.00"}"#;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// How the partner signs, with OpenSSL.
#[derive(Clone, Copy, Debug)]
enum Partner {
    Sm2,
    RsaPss,
    HmacSm3,
}

impl Partner {
    fn scheme(self) -> &'static str {
        match self {
            Self::Sm2 => "sm2",
            Self::RsaPss => "rsa-pss",
            Self::HmacSm3 => "hmac-sm3",
        }
    }

    fn alias(self) -> String {
        format!("partner-{}", self.scheme())
    }

    /// The body digest by OpenSSL: SM3, or SHA-256 for RSA-PSS.
    fn digest(self, dir: &Scratch, body: &[u8]) -> Vec<u8> {
        let file = dir.write("body", body);
        let md = match self {
            Self::Sm2 | Self::HmacSm3 => "-sm3",
            Self::RsaPss => "-sha256",
        };
        openssl_ok(&["dgst", md, "-binary", &file])
    }

    /// The canonical string, written out here from docs/FORMATS.md.
    fn canonical(self, dir: &Scratch, method: &str, path: &str, ts: u64, nonce: &[u8]) -> String {
        format!(
            "KMS-REQUEST-V1\n{method}\n{path}\n{ts}\n{}\n{}",
            hex::encode(nonce),
            hex::encode(self.digest(dir, BODY))
        )
    }

    /// The partner's signature over `canonical`, by OpenSSL.
    fn sign(self, dir: &Scratch, canonical: &str) -> Vec<u8> {
        let msg = dir.write("canonical", canonical);
        let key = dir.path(&format!("{}.key", self.scheme()));
        let key = key.to_str().unwrap();
        let hmac_key = format!("hexkey:{MAC_KEY_HEX}");
        let args: Vec<&str> = match self {
            Self::Sm2 => vec![
                "dgst",
                "-sm3",
                "-sign",
                key,
                "-sigopt",
                "distid:1234567812345678",
            ],
            Self::RsaPss => vec![
                "dgst",
                "-sha256",
                "-sign",
                key,
                "-sigopt",
                "rsa_padding_mode:pss",
                "-sigopt",
                "rsa_pss_saltlen:32",
            ],
            Self::HmacSm3 => vec!["dgst", "-sm3", "-mac", "HMAC", "-macopt", &hmac_key],
        };
        let mut args = args;
        args.extend(["-binary", &msg]);
        openssl_ok(&args)
    }

    /// Makes the partner's key with OpenSSL and registers it in the KMS: the public half of
    /// an SM2 or RSA key, or the HMAC key wrapped to the KMS's import key.
    async fn register(self, w: &World, dir: &Scratch) {
        let mut keys = w.admin.keys.clone();
        let key_file = dir.path(&format!("{}.key", self.scheme()));
        let key_file = key_file.to_str().unwrap();
        let public = match self {
            Self::Sm2 => {
                openssl_ok(&["genpkey", "-algorithm", "SM2", "-out", key_file]);
                Some(openssl_ok(&["pkey", "-in", key_file, "-pubout"]))
            }
            Self::RsaPss => {
                openssl_ok(&[
                    "genpkey",
                    "-algorithm",
                    "RSA",
                    "-pkeyopt",
                    "rsa_keygen_bits:2048",
                    "-out",
                    key_file,
                ]);
                Some(openssl_ok(&["pkey", "-in", key_file, "-pubout"]))
            }
            Self::HmacSm3 => None,
        };
        if let Some(pem) = public {
            keys.import_public_key(v1::ImportPublicKeyRequest {
                namespace: APP_NS.to_owned(),
                purpose: Purpose::Sign.into(),
                public_key: pem,
                alias: self.alias(),
                description: "partner's request-signing key".to_owned(),
            })
            .await
            .unwrap();
            return;
        }
        import_known_key(w, dir, Purpose::Mac, "hmac-sm3", &self.alias(), MAC_KEY_HEX).await;
    }
}

struct Signed {
    req: v1::SignedRequest,
}

impl Signed {
    fn new(partner: Partner, dir: &Scratch, ts: u64, nonce: &[u8]) -> Self {
        let (method, path) = ("POST", "/v1/transfers?channel=mobile&seq=42");
        let canonical = partner.canonical(dir, method, path, ts, nonce);
        Self {
            req: v1::SignedRequest {
                key: partner.alias(),
                scheme: partner.scheme().to_owned(),
                signature: partner.sign(dir, &canonical),
                timestamp: ts,
                nonce: nonce.to_vec(),
                method: method.to_owned(),
                path: path.to_owned(),
                body: BODY.to_vec(),
                body_digest: Vec::new(),
            },
        }
    }
}

async fn verify(w: &World, req: v1::SignedRequest) -> v1::VerifyRequestResponse {
    w.app
        .requests
        .clone()
        .verify_request(req)
        .await
        .unwrap()
        .into_inner()
}

fn flags(r: &serde_json::Value) -> Vec<String> {
    r["flags"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Each scheme: OpenSSL's signature verifies once, then is a replay; a changed body is a bad
/// signature and uses up no nonce; a digest stands for the body; every verdict is audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn openssl_signed_requests_verify_once_and_every_verdict_is_audited() {
    let w = World::start().await;
    let dir = Scratch::new();
    let mut nonces = Vec::new();
    for (i, partner) in [Partner::Sm2, Partner::RsaPss, Partner::HmacSm3]
        .into_iter()
        .enumerate()
    {
        partner.register(&w, &dir).await;
        let nonce = format!("nonce-{i}-{}", now()).into_bytes();
        nonces.push(nonce.clone());
        let signed = Signed::new(partner, &dir, now(), &nonce);

        // Tampered first: a forgery must not use up the genuine request's nonce.
        let mut tampered = signed.req.clone();
        tampered.body = br#"{"amount":"999999.00"}"#.to_vec();
        let out = verify(&w, tampered).await;
        assert_eq!(out.verdict(), RequestVerdict::BadSignature, "{partner:?}");
        assert_eq!(out.key_version, 0);

        let out = verify(&w, signed.req.clone()).await;
        assert_eq!(out.verdict(), RequestVerdict::Ok, "{partner:?}: {out:?}");
        assert_eq!(out.key_version, 1);
        assert!(out.reason.is_empty());
        let out = verify(&w, signed.req.clone()).await;
        assert_eq!(out.verdict(), RequestVerdict::Replayed, "{partner:?}");

        // The body's digest (OpenSSL's) in place of the body, under a new nonce.
        let nonce2 = format!("digest-{i}-{}", now()).into_bytes();
        let mut by_digest = Signed::new(partner, &dir, now(), &nonce2).req;
        by_digest.body_digest = partner.digest(&dir, BODY);
        by_digest.body.clear();
        let out = verify(&w, by_digest).await;
        assert_eq!(out.verdict(), RequestVerdict::Ok, "{partner:?} by digest");
    }

    // Stale, both ways, with the reason; checked before the signature.
    let window = 300;
    for ts in [now() - window - 30, now() + window + 30] {
        let out = verify(
            &w,
            Signed::new(Partner::Sm2, &dir, ts, b"stale-nonce-1").req,
        )
        .await;
        assert_eq!(out.verdict(), RequestVerdict::Stale);
        assert!(
            out.reason.contains("outside the window of ±300 s"),
            "{}",
            out.reason
        );
    }
    // Malformed: a 4 KiB nonce, a lower-case method, a path with a line feed. A 1 MiB nonce is
    // past the server's message limit (64 KiB by default) and never decoded.
    let mut long = Signed::new(Partner::HmacSm3, &dir, now(), b"malformed-nonce").req;
    long.nonce = vec![0x5a; 4096];
    let out = verify(&w, long).await;
    assert_eq!(out.verdict(), RequestVerdict::Malformed);
    assert_eq!(out.reason, "nonce must be 8 to 64 bytes; it is 4096 bytes");
    let mut huge = Signed::new(Partner::HmacSm3, &dir, now(), b"malformed-nonce").req;
    huge.nonce = vec![0x5a; 1 << 20];
    expect_err(
        w.app.requests.clone().verify_request(huge).await,
        Code::OutOfRange,
        "decoded message length too large",
    );
    let mut lower = Signed::new(Partner::HmacSm3, &dir, now(), b"malformed-nonce").req;
    lower.method = "post".to_owned();
    let out = verify(&w, lower).await;
    assert_eq!(out.verdict(), RequestVerdict::Malformed);
    assert!(out.reason.starts_with("method "), "{}", out.reason);
    let mut split = Signed::new(Partner::HmacSm3, &dir, now(), b"malformed-nonce").req;
    split.path = "/v1/a\nPOST".to_owned();
    let out = verify(&w, split).await;
    assert_eq!(out.verdict(), RequestVerdict::Malformed);
    assert!(out.reason.starts_with("path "), "{}", out.reason);

    // The trail: one record per call, the verdict as a flag, the key named; never the body,
    // the nonce or a signature.
    let (text, records) = audit_records(&w, "RequestVerification/VerifyRequest").await;
    let count = |flag: &str| {
        records
            .iter()
            .filter(|r| flags(r).iter().any(|f| f == flag))
            .count()
    };
    assert_eq!(count("verified"), 6, "{records:#?}");
    assert_eq!(count("replayed"), 3);
    assert_eq!(count("bad-signature"), 3);
    assert_eq!(count("stale"), 2);
    assert_eq!(count("malformed"), 3);
    // The oversized call is refused before it is read: its record has no key and no verdict.
    let (answered, refused): (Vec<_>, Vec<_>) = records.iter().partition(|r| r["outcome"] == "OK");
    assert_eq!(answered.len(), 17);
    assert_eq!(refused.len(), 1, "{refused:#?}");
    assert_eq!(refused[0]["outcome"], "OUT_OF_RANGE");
    assert!(flags(refused[0]).is_empty());
    assert!(
        answered
            .iter()
            .all(|r| r["key_id"].as_str().is_some_and(|k| !k.is_empty()))
    );
    for secret in nonces.iter().map(hex::encode).chain([
        hex::encode(BODY),
        String::from_utf8_lossy(BODY).into_owned(),
        "6222020000000001".to_owned(),
    ]) {
        assert!(!text.contains(&secret), "the trail holds {secret}");
    }
}

/// Errors are for the call, not the request: scheme unknown or not the key's, both body forms,
/// a key out of reach, a role that may not verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_call_itself_can_be_wrong() {
    let w = World::start().await;
    let dir = Scratch::new();
    Partner::Sm2.register(&w, &dir).await;
    let good = Signed::new(Partner::Sm2, &dir, now(), b"call-errors-1").req;
    let mut requests = w.app.requests.clone();

    let mut r = good.clone();
    r.scheme = "ecdsa".to_owned();
    expect_err(
        requests.verify_request(r).await,
        Code::InvalidArgument,
        "not a request scheme; use sm2, hmac-sm3 or rsa-pss",
    );
    let mut r = good.clone();
    r.scheme = "rsa-pss".to_owned();
    expect_err(
        requests.verify_request(r).await,
        Code::InvalidArgument,
        "rsa-pss cannot be checked with key",
    );
    let mut r = good.clone();
    r.body_digest = vec![0; 32];
    expect_err(
        requests.verify_request(r).await,
        Code::InvalidArgument,
        "not both",
    );
    let mut r = good.clone();
    r.body = vec![b'x'; 64 * 1024 + 1];
    expect_err(
        requests.verify_request(r).await,
        Code::InvalidArgument,
        "body is 65537 bytes; the limit is 65536 bytes",
    );
    let mut r = good.clone();
    r.key = "no-such-key".to_owned();
    expect_err(
        requests.verify_request(r).await,
        Code::NotFound,
        "no-such-key",
    );
    expect_err(
        w.admin.requests.clone().verify_request(good.clone()).await,
        Code::PermissionDenied,
        "verify signed requests",
    );
    // None of these used the nonce: the request still verifies once.
    let out = verify(&w, good).await;
    assert_eq!(out.verdict(), RequestVerdict::Ok);
}
