//! Statements outside any store (setup, inspection, clean-up) and schemas that drop themselves.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio_postgres::{NoTls, SimpleQueryMessage};

/// Every column of every row `sql` returns, as text. It runs on a connection and a thread of
/// its own, so it may be called from sync code, from inside an async runtime and from `Drop`.
pub fn admin_sql(url: &str, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
    let (url, sql) = (url.to_owned(), sql.to_owned());
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("a runtime for admin SQL: {e}"))?;
        runtime.block_on(async move {
            let (client, conn) = tokio_postgres::connect(&url, NoTls)
                .await
                .map_err(|e| format!("connecting to the test PostgreSQL at {url}: {e}"))?;
            let driver = tokio::spawn(conn);
            let messages = client.simple_query(&sql).await;
            drop(client);
            let _ = driver.await;
            let rows = messages
                .map_err(|e| format!("{sql}: {e}"))?
                .into_iter()
                .filter_map(|m| {
                    if let SimpleQueryMessage::Row(r) = m {
                        Some((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect())
                    } else {
                        None
                    }
                })
                .collect();
            Ok(rows)
        })
    })
    .join()
    .map_err(|_| "the admin SQL thread panicked".to_owned())?
}

/// A schema name no other test, run or process uses, dropped with everything in it when this
/// value goes (also when the test panics). Nothing is created: the store under test does that.
#[derive(Debug)]
pub struct TempSchema {
    name: String,
    url: String,
}

impl TempSchema {
    /// A fresh name `PREFIX_PID_N_NANOS` on the test database ([`crate::url`]).
    #[must_use]
    pub fn new(prefix: &str) -> Self {
        Self::on(crate::url(), prefix)
    }

    /// A fresh name on the server at `url`.
    #[must_use]
    pub fn on(url: String, prefix: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        Self {
            name: format!(
                "{prefix}_{}_{}_{nanos:08x}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ),
            url,
        }
    }

    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The server it lives on.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for TempSchema {
    fn drop(&mut self) {
        // Never panic here: a drop during a failing test's unwinding would abort the process.
        if let Err(e) = admin_sql(
            &self.url,
            &format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name),
        ) {
            eprintln!("dropping test schema {}: {e}", self.name);
        }
    }
}
