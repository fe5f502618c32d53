//! `kms tokenize` and `kms detokenize` (issue 22 item 1) against the real server: CSV columns
//! replaced in calls of at most 1000 values, quoted fields and other columns passed through,
//! the key version printed for detokenising; a refused cell writes nothing and names its row
//! and column; a column beyond a row is a usage error; the trail holds one record per call.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{DevServer, fails, ok};
use serde_json::Value;

fn luhn(n: u64) -> String {
    // A 16-digit number from n, with its Luhn check digit.
    let body = format!("621234{:09}", n % 1_000_000_000);
    for d in 0..10 {
        let pan = format!("{body}{d}");
        let digits: Vec<u16> = pan.bytes().map(|b| u16::from(b - b'0')).collect();
        if kms_core::crypto::tokenize::luhn_valid(&digits) {
            return pan;
        }
    }
    unreachable!()
}

#[test]
fn csv_columns_round_trip_in_calls_of_1000_and_refusals_write_nothing() {
    let server = DevServer::start();
    ok(&server.kms(
        "admin",
        &[
            "key",
            "create",
            "--purpose",
            "tokenize",
            "--alias",
            "pan-tokens",
        ],
    ));
    // 2500 rows: three calls. Column 2 a PAN, column 4 an account number; a quoted name with a
    // comma; some empty cells.
    let mut csv = String::from("id,pan,\"name, given\",account\r\n");
    for i in 0..2500u64 {
        let account = if i % 7 == 0 {
            String::new()
        } else {
            format!("{:012}", i * 7919)
        };
        csv.push_str(&format!(
            "{i},{},\"Li, {i}\",{account}\r\n",
            luhn(i * 104_729)
        ));
    }
    let out = server.kms_in(
        "app",
        &[
            "--json",
            "tokenize",
            "--key",
            "pan-tokens",
            "--column",
            "2",
            "--header",
            "--context",
            "file=cards",
        ],
        csv.as_bytes(),
    );
    let tokens = ok(&out);
    let summary: Value = serde_json::from_str(String::from_utf8_lossy(&out.stderr).trim()).unwrap();
    assert_eq!(summary["values"], 2500, "{summary}");
    assert_eq!(summary["records"], 2501, "{summary}");
    assert_eq!(summary["key_version"], 1, "{summary}");
    let lines: Vec<&str> = tokens.split("\r\n").collect();
    assert_eq!(
        lines[0], "id,pan,\"name, given\",account",
        "header kept, CRLF kept"
    );
    assert_eq!(lines.len(), 2502, "2501 records and the final line end");
    for (line, orig) in lines[1..2501].iter().zip(csv.split("\r\n").skip(1)) {
        let (t, o): (Vec<&str>, Vec<&str>) = (line.split(',').collect(), orig.split(',').collect());
        assert_eq!((t[0], t[2], t[3], t[4]), (o[0], o[2], o[3], o[4]));
        assert_ne!(t[1], o[1]);
        assert_eq!(t[1][..6], o[1][..6]);
        assert_eq!(t[1][12..], o[1][12..]);
    }
    // And back, both columns at once after tokenising the account numbers too.
    server.write("tokens.csv", &tokens);
    let both = ok(&server.kms(
        "app",
        &[
            "tokenize",
            "--key",
            "pan-tokens",
            "--format",
            "digits",
            "--column",
            "4",
            "--header",
            "--context",
            "file=cards",
            "--in",
            "tokens.csv",
        ],
    ));
    assert_ne!(both, tokens);
    server.write("both.csv", &both);
    let accounts_back = ok(&server.kms(
        "app",
        &[
            "detokenize",
            "--key",
            "pan-tokens",
            "--key-version",
            "1",
            "--format",
            "digits",
            "--column",
            "4",
            "--header",
            "--context",
            "file=cards",
            "--in",
            "both.csv",
        ],
    ));
    assert_eq!(accounts_back, tokens);
    server.write("accounts_back.csv", &accounts_back);
    let back = ok(&server.kms(
        "app",
        &[
            "detokenize",
            "--key",
            "pan-tokens",
            "--key-version",
            "1",
            "--column",
            "2",
            "--header",
            "--context",
            "file=cards",
            "--in",
            "accounts_back.csv",
            "--out",
            "back.csv",
        ],
    ));
    assert_eq!(back, "");
    assert_eq!(server.read("back.csv"), csv.as_bytes());

    // A refused cell: nothing written, its row and column named, INVALID_ARGUMENT's exit code.
    let bad = "id,pan\n1,4111111111111111\n2,4111111111111112\n3,4111\n";
    let out = server.kms_in(
        "app",
        &[
            "tokenize",
            "--key",
            "pan-tokens",
            "--column",
            "2",
            "--header",
        ],
        bad.as_bytes(),
    );
    let stderr = fails(&out, 6, "2 of 3 cells were refused, so nothing was written");
    assert!(
        stderr.contains("row 3 column 2: invalid value: fails the Luhn check"),
        "{stderr}"
    );
    assert!(!stderr.contains("4111111111111112"), "{stderr}");
    assert!(out.stdout.is_empty());
    // A column beyond a row, and malformed CSV: usage errors before anything is sent.
    fails(
        &server.kms_in(
            "app",
            &["tokenize", "--key", "pan-tokens", "--column", "3"],
            bad.as_bytes(),
        ),
        2,
        "row 1 has 2 fields; --column 3 is beyond them",
    );
    fails(
        &server.kms_in(
            "app",
            &["tokenize", "--key", "pan-tokens", "--column", "1"],
            b"a,b\n\"open\n",
        ),
        2,
        "CSV line 2: a quoted field is not closed",
    );
    // Tokenize is not detokenize: a wrong version gives other values, a missing one is usage.
    fails(
        &server.kms_in(
            "app",
            &["detokenize", "--key", "pan-tokens", "--column", "2"],
            bad.as_bytes(),
        ),
        2,
        "--key-version",
    );

    // The trail: one record per call, with the count; never a value.
    ok(&server.kms("auditor", &["audit", "export", "--out", "audit.jsonl"]));
    let trail = String::from_utf8(server.read("audit.jsonl")).unwrap();
    let counts: Vec<(String, u64)> = trail
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| {
            r["operation"]
                .as_str()
                .is_some_and(|o| o.starts_with("Tokenization/"))
        })
        .map(|r| {
            (
                r["operation"].as_str().unwrap().to_owned(),
                r["count"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    let tokenize_calls: Vec<u64> = counts
        .iter()
        .filter(|(o, _)| o == "Tokenization/Tokenize")
        .map(|(_, c)| *c)
        .collect();
    // 2500 PANs in three calls, the accounts (2142 non-empty) in three, then the bad file.
    assert_eq!(tokenize_calls[..3], [1000, 1000, 500], "{counts:?}");
    assert_eq!(tokenize_calls.iter().take(6).sum::<u64>(), 2500 + 2142);
    assert!(!trail.contains(&luhn(0)));
}
