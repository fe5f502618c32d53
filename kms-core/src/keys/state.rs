//! Key states and the only transitions allowed between them (KEY-8).
//!
//! ```text
//! ENABLED ⇄ DISABLED
//! ENABLED | DISABLED → COMPROMISED                      (one way)
//! ENABLED | DISABLED | COMPROMISED → PENDING_DESTRUCTION (7–90 days, cancellable)
//! PENDING_DESTRUCTION → DISABLED (cancel; COMPROMISED if it was compromised)
//! PENDING_DESTRUCTION → DESTROYED                        (when the waiting period ends)
//! ```

use core::fmt;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum KeyState {
    Enabled,
    Disabled,
    /// One-way: no new encryption or signing; decrypt and verify still work and are flagged.
    Compromised,
    /// Waiting for destruction; no use at all; cancellable.
    PendingDestruction,
    /// Material wiped; metadata kept for auditors.
    Destroyed,
    /// Origin `imported`: no material yet, or its imported material expired; waits for
    /// `ImportKeyMaterial` (issue 19). No use at all.
    PendingImport,
}

impl KeyState {
    pub const ALL: [Self; 6] = [
        Self::Enabled,
        Self::Disabled,
        Self::Compromised,
        Self::PendingDestruction,
        Self::Destroyed,
        Self::PendingImport,
    ];

    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Enabled => "ENABLED",
            Self::Disabled => "DISABLED",
            Self::Compromised => "COMPROMISED",
            Self::PendingDestruction => "PENDING_DESTRUCTION",
            Self::Destroyed => "DESTROYED",
            Self::PendingImport => "PENDING_IMPORT",
        }
    }

    /// Whether new protection (encrypt, sign, MAC, data keys) is allowed.
    #[must_use]
    pub fn allows_protect(self) -> bool {
        match self {
            Self::Enabled => true,
            Self::Disabled
            | Self::Compromised
            | Self::PendingDestruction
            | Self::Destroyed
            | Self::PendingImport => false,
        }
    }

    /// Whether opening existing protection (decrypt, verify) is allowed.
    #[must_use]
    pub fn allows_open(self) -> bool {
        match self {
            Self::Enabled | Self::Compromised => true,
            Self::Disabled | Self::PendingDestruction | Self::Destroyed | Self::PendingImport => {
                false
            }
        }
    }
}

impl fmt::Display for KeyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What an administrator (or the reaper) asks of a key's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    Enable,
    Disable,
    Compromise,
    ScheduleDestruction,
    CancelDestruction,
    Destroy,
}

impl Transition {
    pub const ALL: [Self; 6] = [
        Self::Enable,
        Self::Disable,
        Self::Compromise,
        Self::ScheduleDestruction,
        Self::CancelDestruction,
        Self::Destroy,
    ];

    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Enable => "enable",
            Self::Disable => "disable",
            Self::Compromise => "mark compromised",
            Self::ScheduleDestruction => "schedule destruction",
            Self::CancelDestruction => "cancel destruction",
            Self::Destroy => "destroy",
        }
    }
}

/// The state after `t`, or `None` when the transition is not allowed from `from`.
/// `was_compromised` says where a cancelled destruction returns to.
#[must_use]
pub fn next_state(from: KeyState, t: Transition, was_compromised: bool) -> Option<KeyState> {
    use KeyState::{Compromised, Destroyed, Disabled, Enabled, PendingDestruction, PendingImport};
    match (from, t) {
        (Disabled, Transition::Enable) => Some(Enabled),
        (Enabled, Transition::Disable) => Some(Disabled),
        (Enabled | Disabled, Transition::Compromise) => Some(Compromised),
        // A key waiting for import may be given up (a cancelled destruction returns it to
        // waiting: `lifecycle.rs` knows it has no material).
        (Enabled | Disabled | Compromised | PendingImport, Transition::ScheduleDestruction) => {
            Some(PendingDestruction)
        }
        (PendingDestruction, Transition::CancelDestruction) => Some(if was_compromised {
            Compromised
        } else {
            Disabled
        }),
        (PendingDestruction, Transition::Destroy) => Some(Destroyed),
        (
            Enabled | Compromised | PendingDestruction | Destroyed | PendingImport,
            Transition::Enable,
        )
        | (
            Disabled | Compromised | PendingDestruction | Destroyed | PendingImport,
            Transition::Disable,
        )
        | (Compromised | PendingDestruction | Destroyed | PendingImport, Transition::Compromise)
        | (PendingDestruction | Destroyed, Transition::ScheduleDestruction)
        | (
            Enabled | Disabled | Compromised | Destroyed | PendingImport,
            Transition::CancelDestruction | Transition::Destroy,
        ) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use KeyState::{Compromised, Destroyed, Disabled, Enabled, PendingDestruction, PendingImport};

    /// The whole table: every (state, transition) pair, allowed or not.
    #[test]
    fn transition_table_is_exactly_the_documented_one() {
        let allowed = [
            (Disabled, Transition::Enable, Enabled),
            (Enabled, Transition::Disable, Disabled),
            (Enabled, Transition::Compromise, Compromised),
            (Disabled, Transition::Compromise, Compromised),
            (Enabled, Transition::ScheduleDestruction, PendingDestruction),
            (
                Disabled,
                Transition::ScheduleDestruction,
                PendingDestruction,
            ),
            (
                Compromised,
                Transition::ScheduleDestruction,
                PendingDestruction,
            ),
            (
                PendingImport,
                Transition::ScheduleDestruction,
                PendingDestruction,
            ),
            (PendingDestruction, Transition::CancelDestruction, Disabled),
            (PendingDestruction, Transition::Destroy, Destroyed),
        ];
        for from in KeyState::ALL {
            for t in Transition::ALL {
                let expected = allowed
                    .iter()
                    .find(|(f, tt, _)| *f == from && *tt == t)
                    .map(|(_, _, to)| *to);
                assert_eq!(
                    next_state(from, t, false),
                    expected,
                    "{from} --{}-->",
                    t.name()
                );
            }
        }
        assert_eq!(
            next_state(PendingDestruction, Transition::CancelDestruction, true),
            Some(Compromised)
        );
    }

    #[test]
    fn use_rules_follow_the_state() {
        assert!(Enabled.allows_protect() && Enabled.allows_open());
        assert!(!Compromised.allows_protect() && Compromised.allows_open());
        for s in [Disabled, PendingDestruction, Destroyed, PendingImport] {
            assert!(!s.allows_protect() && !s.allows_open(), "{s}");
        }
    }
}
