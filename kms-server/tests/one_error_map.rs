//! `status::to_status` is the only place a `Status` is made from an error (issue 17): no other
//! module of the server calls a `Status` constructor. The audit layer is the exception the
//! design names (it answers for the audit trail itself, before and after any handler), and
//! health and reflection are tonic's own.

use std::path::{Path, PathBuf};

const CONSTRUCTORS: &[&str] = &[
    "Status::new(",
    "Status::invalid_argument(",
    "Status::permission_denied(",
    "Status::unauthenticated(",
    "Status::not_found(",
    "Status::already_exists(",
    "Status::failed_precondition(",
    "Status::unavailable(",
    "Status::internal(",
    "Status::resource_exhausted(",
    "Status::aborted(",
    "Status::unimplemented(",
    "Status::out_of_range(",
    "Status::data_loss(",
    "Status::unknown(",
    "Status::cancelled(",
    "Status::deadline_exceeded(",
];

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

#[test]
fn only_the_status_module_makes_statuses() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    let mut found = Vec::new();
    for path in &files {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name == "status.rs" || name == "audit_layer.rs" {
            continue;
        }
        let text = std::fs::read_to_string(path).expect("read source");
        // Unit tests (the module that closes each file) may build statuses to feed the code.
        let shipped = text.split("#[cfg(test)]").next().unwrap_or("");
        for c in CONSTRUCTORS {
            if shipped.contains(c) {
                found.push(format!("{}: {c}", path.display()));
            }
        }
    }
    assert!(files.len() > 15, "found only {} sources", files.len());
    assert_eq!(found, Vec::<String>::new());
}
