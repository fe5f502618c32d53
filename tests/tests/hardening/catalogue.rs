//! The catalogue's bookkeeping: each case's expected status, checked and recorded, so that one
//! run reports every mismatch at once and prints the whole table (class → case → outcome).

use std::fmt::Debug;

use tonic::{Code, Status};

use crate::common::{assert_no_secret, has_request_id};

/// Longer messages than this are echoing input back (a message is a sentence, not a payload).
pub(crate) const MAX_MESSAGE: usize = 600;

/// The part of a message before its request id.
pub(crate) fn without_request_id(s: &Status) -> &str {
    s.message().split(" (request ").next().unwrap_or_default()
}

#[derive(Default)]
pub(crate) struct Catalogue {
    rows: Vec<String>,
    failures: Vec<String>,
}

impl Catalogue {
    fn row(&mut self, class: &str, case: &str, outcome: &str) {
        self.rows.push(format!("{class:<22} {case:<58} {outcome}"));
    }

    fn fail(&mut self, class: &str, case: &str, why: String) {
        self.failures.push(format!("[{class}] {case}: {why}"));
    }

    /// A refusal with `code` whose message names what is wrong (`words`, case-insensitive), is
    /// short, carries a request id and no secret. Returns the status when it was a refusal.
    pub(crate) fn refused<T: Debug>(
        &mut self,
        class: &str,
        case: &str,
        result: Result<T, Status>,
        code: Code,
        words: &[&str],
    ) -> Option<Status> {
        let s = match result {
            Ok(v) => {
                self.row(class, case, "accepted (!)");
                self.fail(
                    class,
                    case,
                    format!("expected {code:?}, got success: {v:?}"),
                );
                return None;
            }
            Err(s) => s,
        };
        assert_no_secret(&s);
        self.row(
            class,
            case,
            &format!("{:?}: {}", s.code(), without_request_id(&s)),
        );
        let m = s.message().to_lowercase();
        let mut problems = Vec::new();
        if s.code() != code {
            problems.push(format!("code {:?}, expected {code:?}", s.code()));
        }
        for w in words {
            if !m.contains(&w.to_lowercase()) {
                problems.push(format!("message does not say {w:?}"));
            }
        }
        if s.message().len() > MAX_MESSAGE {
            problems.push(format!("message is {} bytes long", s.message().len()));
        }
        if !has_request_id(&s) {
            problems.push("no request id".to_owned());
        }
        if !problems.is_empty() {
            let shown: String = s.message().chars().take(300).collect();
            self.fail(
                class,
                case,
                format!("{} — {:?} {shown:?}", problems.join("; "), s.code()),
            );
        }
        Some(s)
    }

    /// A request that must succeed; returns its value.
    pub(crate) fn accepted<T>(
        &mut self,
        class: &str,
        case: &str,
        result: Result<T, Status>,
    ) -> Option<T> {
        match result {
            Ok(v) => {
                self.row(class, case, "OK");
                Some(v)
            }
            Err(s) => {
                assert_no_secret(&s);
                self.row(class, case, &format!("{:?} (!)", s.code()));
                self.fail(class, case, format!("expected success, got {s:?}"));
                None
            }
        }
    }

    /// Records a check that is not a status (a verdict, a timing), failing it if `ok` is false.
    pub(crate) fn check(&mut self, class: &str, case: &str, ok: bool, outcome: String) {
        self.row(class, case, &outcome);
        if !ok {
            self.fail(class, case, outcome);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }

    /// Prints the table and fails with every mismatch.
    pub(crate) fn finish(self) {
        eprintln!(
            "bad-input catalogue, {} cases:\n{}",
            self.rows.len(),
            self.rows.join("\n")
        );
        assert!(
            self.failures.is_empty(),
            "{} of {} cases went wrong:\n{}",
            self.failures.len(),
            self.rows.len(),
            self.failures.join("\n")
        );
    }
}
