//! `kms algorithms`: the canonical key specs, straight from `kms_core::alg::KeySpec::ALL`.

use std::io::{self, Write};

use kms_core::alg::{KeySpec, Purpose};
use kms_core::policy::{Policy, PolicyMode};
use serde::Serialize;

/// One key spec the policy allows.
#[derive(Debug, Serialize)]
pub(crate) struct SpecRow {
    spec: &'static str,
    purposes: Vec<&'static str>,
    gm: bool,
}

/// The key specs the chosen policy allows, in `KeySpec::ALL` order.
pub(crate) fn rows(gm_only: bool) -> Vec<SpecRow> {
    let mode = if gm_only {
        PolicyMode::GmOnly
    } else {
        PolicyMode::Standard
    };
    let policy = Policy::from_config(mode);
    KeySpec::ALL
        .into_iter()
        .filter(|&s| policy.allows(s))
        .map(|spec| SpecRow {
            spec: spec.name(),
            purposes: Purpose::ALL
                .into_iter()
                .filter(|&p| spec.supports(p))
                .map(Purpose::name)
                .collect(),
            gm: spec.is_gm(),
        })
        .collect()
}

/// Writes one row per key spec the chosen policy allows: name, purposes, GM or not.
pub(crate) fn run(gm_only: bool, out: &mut dyn Write) -> io::Result<()> {
    writeln!(out, "{:<13} {:<35} GM", "SPEC", "PURPOSES")?;
    for row in rows(gm_only) {
        let gm = if row.gm { "yes" } else { "no" };
        writeln!(out, "{:<13} {:<35} {gm}", row.spec, row.purposes.join(","))?;
    }
    Ok(())
}
