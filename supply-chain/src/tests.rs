#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

const CRATES_IO: &str = "registry+https://github.com/rust-lang/crates.io-index";

fn config() -> Config {
    toml::from_str(
        r#"
        [advisories]
        ignore = [{ id = "RUSTSEC-0000-0002", reason = "checked: constant time since 2.0" }]
        [licenses]
        allow = ["MIT", "Apache-2.0", "Apache-2.0 WITH LLVM-exception"]
        private = { ignore = true }
        [bans]
        deny = [
            { crate = "sm2", deny-multiple-versions = true, reason = "one SM2 implementation" },
            { crate = "openssl", reason = "RustCrypto and ring only" },
            { crate = "aws-lc-rs", wrappers = ["kms-core"], reason = "RSA private keys only" },
        ]
        skip = [{ crate = "getrandom@0.2.17", reason = "ring's" }]
        [sources]
        allow-registry = ["https://github.com/rust-lang/crates.io-index"]
        "#,
    )
    .unwrap()
}

fn pkg(name: &str, version: &str) -> LockedPackage {
    LockedPackage {
        name: name.into(),
        version: version.into(),
        source: Some(CRATES_IO.into()),
        dependencies: Vec::new(),
    }
}

fn dep(name: &str, version: &str, dependencies: &[&str]) -> LockedPackage {
    LockedPackage {
        dependencies: dependencies.iter().map(|d| (*d).to_owned()).collect(),
        ..pkg(name, version)
    }
}

fn advisory(id: &str, package: &str, informational: Option<&str>, patched: &str) -> String {
    let info = informational.map_or(String::new(), |i| format!("informational = \"{i}\"\n"));
    format!(
        "```toml\n[advisory]\nid = \"{id}\"\npackage = \"{package}\"\ndate = \"2024-01-01\"\n{info}\n[versions]\npatched = [{patched}]\n```\n\n# Something is wrong with {package}\n\nDetails.\n"
    )
}

fn db() -> Vec<Advisory> {
    [
        advisory(
            "RUSTSEC-0000-0001",
            "leaky",
            None,
            "\">= 1.2.3\", \"^ 0.9.9\"",
        ),
        advisory("RUSTSEC-0000-0002", "bignum", None, ""),
        advisory("RUSTSEC-0000-0003", "oldie", Some("unmaintained"), ""),
        advisory("RUSTSEC-0000-0004", "chatty", Some("notice"), ""),
    ]
    .iter()
    .map(|t| parse_advisory(t).unwrap())
    .collect()
}

#[test]
fn a_vulnerable_version_fails_and_a_patched_one_passes() {
    let r = check(&config(), &[pkg("leaky", "1.2.2")], None, &db());
    assert!(!r.passed());
    assert!(r.errors[0].contains("RUSTSEC-0000-0001"), "{r:?}");
    assert!(
        r.errors[0].contains("Something is wrong with leaky"),
        "{r:?}"
    );
    for ok in ["1.2.3", "2.0.0", "0.9.9", "0.9.12"] {
        let r = check(&config(), &[pkg("leaky", ok)], None, &db());
        assert!(r.passed(), "{ok}: {r:?}");
    }
    let r = check(&config(), &[pkg("leaky", "0.9.8")], None, &db());
    assert!(!r.passed());
    // A pre-release of a patched version counts as patched.
    let r = check(&config(), &[pkg("leaky", "1.3.0-rc.1")], None, &db());
    assert!(r.passed(), "{r:?}");
}

#[test]
fn unmaintained_fails_notice_warns_ignore_needs_a_reason() {
    let r = check(&config(), &[pkg("oldie", "0.1.0")], None, &db());
    assert!(r.errors.iter().any(|e| e.contains("unmaintained")), "{r:?}");
    let r = check(&config(), &[pkg("chatty", "0.1.0")], None, &db());
    assert!(
        r.passed() && r.warnings.iter().any(|w| w.contains("notice")),
        "{r:?}"
    );
    let r = check(&config(), &[pkg("bignum", "0.10.0")], None, &db());
    assert!(r.passed(), "{r:?}");
    assert!(r.ignored[0].contains("constant time since 2.0"), "{r:?}");

    let mut no_reason = config();
    no_reason.advisories.ignore[0].reason = "  ".into();
    let r = check(&no_reason, &[pkg("bignum", "0.10.0")], None, &db());
    assert!(
        r.errors.iter().any(|e| e.contains("no written reason")),
        "{r:?}"
    );
}

#[test]
fn an_unused_ignore_is_reported() {
    let r = check(&config(), &[pkg("serde", "1.0.0")], None, &db());
    assert!(r.passed());
    assert!(
        r.warnings.iter().any(|w| w.contains("matches nothing")),
        "{r:?}"
    );
}

#[test]
fn withdrawn_advisories_do_not_count() {
    let text = advisory("RUSTSEC-0000-0009", "leaky", None, "")
        .replace("date = ", "withdrawn = \"2024-02-02\"\ndate = ");
    let a = parse_advisory(&text).unwrap();
    assert!(a.withdrawn);
    let r = check(&config(), &[pkg("leaky", "1.2.3")], None, &[a]);
    assert!(r.passed(), "{r:?}");
}

#[test]
fn only_crates_io_is_an_allowed_source() {
    let mut git = pkg("sm3", "0.5.0");
    git.source = Some("git+https://github.com/someone/hashes?branch=main#abc".into());
    let mut other = pkg("sm4", "0.6.0");
    other.source = Some("registry+https://my-registry.example/index".into());
    let mut path = pkg("kms-core", "0.1.0");
    path.source = None;
    let mut sparse = pkg("hmac", "0.13.0");
    sparse.source = Some("sparse+https://index.crates.io/".into());
    let r = check(&config(), &[git, other, path, sparse], None, &[]);
    assert_eq!(r.errors.len(), 2, "{r:?}");
    assert!(r.errors[0].contains("git+https://github.com/someone/hashes"));
    assert!(r.errors[1].contains("my-registry"));
}

#[test]
fn duplicate_crypto_crates_and_banned_crates_fail() {
    let r = check(
        &config(),
        &[pkg("sm2", "0.13.2"), pkg("sm2", "0.14.0")],
        None,
        &[],
    );
    assert!(
        r.errors
            .iter()
            .any(|e| e.contains("sm2 is locked in 2 versions")),
        "{r:?}"
    );
    let r = check(&config(), &[pkg("openssl", "0.10.0")], None, &[]);
    assert!(
        r.errors
            .iter()
            .any(|e| e.contains("RustCrypto and ring only")),
        "{r:?}"
    );
    // Other duplicates only warn; skipped versions do not count.
    let r = check(
        &config(),
        &[
            pkg("syn", "1.0.0"),
            pkg("syn", "2.0.0"),
            pkg("getrandom", "0.2.17"),
            pkg("getrandom", "0.4.3"),
        ],
        None,
        &[],
    );
    assert!(r.passed(), "{r:?}");
    let dups: Vec<_> = r
        .warnings
        .iter()
        .filter(|w| w.contains("versions"))
        .collect();
    assert_eq!(dups.len(), 1, "{r:?}");
    assert!(dups[0].starts_with("syn "), "{r:?}");
}

#[test]
fn a_wrapped_ban_allows_only_its_wrappers_as_direct_dependents() {
    let mut core = dep("kms-core", "0.1.0", &["aws-lc-rs", "rsa"]);
    core.source = None;
    let lc = dep("aws-lc-rs", "1.19.0", &["aws-lc-sys"]);
    let r = check(&config(), &[core.clone(), lc.clone()], None, &[]);
    assert!(r.passed(), "{r:?}");

    // rustls switched to its aws-lc-rs provider: a second dependent, not a wrapper.
    let rustls = dep("rustls", "0.23.0", &["aws-lc-rs", "ring"]);
    let r = check(&config(), &[core, lc.clone(), rustls], None, &[]);
    assert_eq!(r.errors.len(), 1, "{r:?}");
    assert!(
        r.errors[0].contains("aws-lc-rs 1.19.0 is banned except under kms-core, but rustls"),
        "{r:?}"
    );

    // Nothing says who pulls it: banned.
    let r = check(&config(), std::slice::from_ref(&lc), None, &[]);
    assert!(
        r.errors
            .iter()
            .any(|e| e.contains("nothing in the lock depends on it")),
        "{r:?}"
    );

    // The lock names a version when two are locked: only the one depended on is allowed.
    let core2 = dep("kms-core", "0.1.0", &["aws-lc-rs 1.19.0"]);
    let other = dep("other", "1.0.0", &["aws-lc-rs 1.20.0"]);
    let lc2 = pkg("aws-lc-rs", "1.20.0");
    let r = check(&config(), &[core2, lc, other, lc2], None, &[]);
    assert_eq!(r.errors.len(), 1, "{r:?}");
    assert!(
        r.errors[0].starts_with("aws-lc-rs 1.20.0 is banned"),
        "{r:?}"
    );

    // Without wrappers, being a dependency of anything is no excuse.
    let r = check(
        &config(),
        &[
            dep("kms-core", "0.1.0", &["openssl"]),
            pkg("openssl", "0.10.0"),
        ],
        None,
        &[],
    );
    assert!(!r.passed(), "{r:?}");
}

fn meta(name: &str, license: Option<&str>) -> MetadataPackage {
    MetadataPackage {
        name: name.into(),
        version: "1.0.0".into(),
        license: license.map(str::to_owned),
        source: Some(CRATES_IO.into()),
        publish: None,
    }
}

#[test]
fn licenses_follow_spdx_and_the_allowlist() {
    let allow = config().licenses.allow;
    for ok in [
        "MIT",
        "MIT OR Apache-2.0",
        "Apache-2.0/MIT",
        "(MIT OR GPL-3.0) AND Apache-2.0",
        "Apache-2.0 WITH LLVM-exception",
        "GPL-2.0 OR (Apache-2.0 AND MIT)",
    ] {
        assert!(license_allowed(ok, &allow).unwrap(), "{ok}");
    }
    for bad in [
        "GPL-3.0",
        "MIT AND GPL-3.0",
        "ISC",
        "MIT WITH Classpath-exception-2.0",
        "(MIT OR GPL-3.0) AND BSD-3-Clause",
    ] {
        assert!(!license_allowed(bad, &allow).unwrap(), "{bad}");
    }
    // The error is a message (a String): each names what is wrong with the expression.
    for (broken, why) in [
        ("(MIT", "unbalanced parentheses"),
        ("MIT OR", "unexpected None"),
        ("MIT WITH", "WITH without an exception"),
        ("MIT Apache-2.0", "trailing tokens in \"MIT Apache-2.0\""),
    ] {
        assert_eq!(
            license_allowed(broken, &allow),
            Err(why.to_owned()),
            "{broken}"
        );
    }

    let mut private = meta("kms-core", Some("Proprietary"));
    private.source = None;
    private.publish = Some(Vec::new());
    let r = check(
        &config(),
        &[],
        Some(&[
            meta("fine", Some("MIT OR Apache-2.0")),
            meta("copyleft", Some("GPL-3.0-only")),
            meta("silent", None),
            private,
        ]),
        &[],
    );
    assert_eq!(r.errors.len(), 2, "{r:?}");
    assert!(r.errors[0].contains("copyleft") && r.errors[1].contains("silent"));
}

#[test]
fn rustsec_requirement_spellings_parse() {
    for req in [
        ">= 0.10.3",
        "^ 0.3.1",
        ">=0.3.20",
        "< 0.2.0, >= 0.1.5",
        "=0.2.0",
        "0.13.10",
    ] {
        parse_req(req).unwrap();
    }
}

#[test]
fn dates_and_durations() {
    assert_eq!(days_from_civil("1970-01-01"), Some(0));
    assert_eq!(days_from_civil("2026-08-21"), Some(20_686));
    assert_eq!(staleness_days("P365D"), Some(365));
    assert_eq!(staleness_days("365"), None);
}

/// The real snapshot (when present, as in CI): a lock with versions it flags fails.
#[test]
fn the_real_snapshot_flags_known_vulnerable_versions() {
    // Where .ci/supply-chain looks: $KMS_ADVISORY_DB, else ../shared beside the repository.
    let db = std::env::var_os("KMS_ADVISORY_DB").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/advisory-db"),
        std::path::PathBuf::from,
    );
    assert!(
        db.join("crates").is_dir(),
        "the advisory database snapshot is missing at {}",
        db.display()
    );
    let lock = parse_lock(&format!(
        "version = 4\n\n[[package]]\nname = \"sharks\"\nversion = \"0.5.0\"\nsource = \"{CRATES_IO}\"\n\n\
         [[package]]\nname = \"smallvec\"\nversion = \"0.6.9\"\nsource = \"{CRATES_IO}\"\n"
    ))
    .unwrap();
    let advisories = load_advisories(&db, lock.iter().map(|p| p.name.as_str())).unwrap();
    let r = check(&Config::default(), &lock, None, &advisories);
    assert!(
        r.errors.iter().any(|e| e.contains("RUSTSEC-2024-0398")),
        "{r:?}"
    );
    assert!(
        r.errors.iter().any(|e| e.contains("RUSTSEC-2019-0009")),
        "{r:?}"
    );
}
