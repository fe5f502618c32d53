//! `kms-test-postgres`: starts a throwaway PostgreSQL server, prints its URL on one line, and
//! keeps it until standard input closes; then stops it and removes its directory. For
//! bench/run.py, and for anyone who wants the tests' database by hand:
//!
//! ```sh
//! cargo run -p kms-test-postgres      # prints postgres://postgres@127.0.0.1:PORT/postgres
//! ```

use std::io::{Read, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
    let server = match kms_test_postgres::Server::start() {
        Ok(server) => server,
        Err(e) => {
            eprintln!("kms-test-postgres: {e}");
            return ExitCode::from(2);
        }
    };
    let mut stdout = std::io::stdout();
    if writeln!(stdout, "{}", server.url())
        .and_then(|()| stdout.flush())
        .is_err()
    {
        return ExitCode::from(1);
    }
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    drop(server);
    ExitCode::SUCCESS
}
