//! The promises the types cannot make alone, checked on the sources: inside `kms-core`, no code
//! outside the policy module builds a policy (it uses the one in `KmsConfig`, or the GM-only

#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `Policy::GM_FORMATS` for GM-fixed formats), and no code outside `crypto/` reaches a primitive
//! without a token (the `_raw` helpers are private to `crypto/`).

use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The shipped part of a source file: all of it but unit-test files and what follows the first
/// `#[cfg(test)]` (by convention the test module closes each file), and without `test-util`
/// items (from a `#[cfg(...test-util...)]` attribute to the end of the item it marks).
fn shipped(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    if name == "tests.rs" {
        return None;
    }
    let text = std::fs::read_to_string(path).expect("read source");
    let mut out = String::new();
    // Inside a test-util item: the brace depth so far, and whether its body has opened.
    let mut skipping: Option<(i64, bool)> = None;
    for line in text.lines() {
        let t = line.trim();
        if t == "#[cfg(test)]" {
            break;
        }
        if skipping.is_none() && t.starts_with("#[cfg(") && t.contains("test-util") {
            skipping = Some((0, false));
            continue;
        }
        if let Some((depth, opened)) = skipping.as_mut() {
            let opens = i64::try_from(line.matches('{').count()).unwrap_or(0);
            let closes = i64::try_from(line.matches('}').count()).unwrap_or(0);
            *depth += opens - closes;
            *opened |= opens > 0;
            // An item without a body (`pub use …;`) ends at its semicolon.
            if (*opened && *depth <= 0) || (!*opened && t.ends_with(';')) {
                skipping = None;
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    Some(out)
}

fn offenders(pattern: &str, allowed: &[&str]) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    assert!(files.len() > 40, "found only {} sources", files.len());
    files
        .iter()
        .filter(|p| {
            let rel = p
                .strip_prefix(&root)
                .expect("under src")
                .to_string_lossy()
                .replace('\\', "/");
            !allowed.iter().any(|a| rel.starts_with(a))
        })
        .filter_map(|p| Some((p, shipped(p)?)))
        .filter(|(_, text)| text.contains(pattern))
        .map(|(p, _)| p.display().to_string())
        .collect()
}

#[test]
fn the_core_never_builds_a_policy_of_its_own() {
    assert_eq!(
        offenders("Policy::from_config(", &["policy/"]),
        Vec::<String>::new()
    );
    assert_eq!(
        offenders("Policy::default()", &["policy/"]),
        Vec::<String>::new()
    );
}

#[test]
fn no_primitive_is_reached_without_a_token_outside_crypto() {
    assert_eq!(offenders("_raw(", &["crypto/"]), Vec::<String>::new());
    assert_eq!(offenders("digest_raw", &["crypto/"]), Vec::<String>::new());
}

#[test]
fn system_operations_are_not_public_on_kms() {
    // The methods the System handle wraps are crate-private on Kms.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/kms");
    for (file, methods) in [
        ("system.rs", &["init", "unseal_with", "seal_now"][..]),
        ("backup.rs", &["restore"][..]),
        (
            "sweeps.rs",
            &["due_for_rotation", "rotate_due", "destroy_due"][..],
        ),
        ("audit_key.rs", &["sign_as_audit_key"][..]),
        ("mod.rs", &["derived_key", "open", "with_clock"][..]),
    ] {
        let text = std::fs::read_to_string(root.join(file)).expect("read");
        for m in methods {
            assert!(
                !text.contains(&format!("    pub fn {m}(")),
                "Kms::{m} in {file} is public"
            );
        }
    }
}
