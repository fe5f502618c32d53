//! `kms algorithms`: the canonical key specs, straight from `kms_core::alg::KeySpec::ALL`.

use std::io::{self, Write};

use kms_core::alg::{KeySpec, Purpose};
use kms_core::policy::{Policy, PolicyMode};

/// Writes one row per key spec the chosen policy allows: name, purposes, GM or not.
pub(crate) fn run(gm_only: bool, out: &mut dyn Write) -> io::Result<()> {
    let mode = if gm_only {
        PolicyMode::GmOnly
    } else {
        PolicyMode::Standard
    };
    let policy = Policy::new(mode);
    writeln!(out, "{:<13} {:<26} GM", "SPEC", "PURPOSES")?;
    for spec in KeySpec::ALL.into_iter().filter(|&s| policy.allows(s)) {
        let purposes: Vec<&str> = Purpose::ALL
            .into_iter()
            .filter(|&p| spec.supports(p))
            .map(Purpose::name)
            .collect();
        let gm = if spec.is_gm() { "yes" } else { "no" };
        writeln!(out, "{:<13} {:<26} {gm}", spec.name(), purposes.join(","))?;
    }
    Ok(())
}
