//! Finding the PostgreSQL server programs (`initdb`, `pg_ctl`) on this machine.

use std::path::{Path, PathBuf};

/// Names the directory holding `initdb` and `pg_ctl`, ahead of any search.
pub(crate) const BIN_ENV: &str = "KMS_TEST_POSTGRES_BIN";

/// Where Debian's packages put each major version's programs.
const DEBIAN_ROOT: &str = "/usr/lib/postgresql";

/// The directory with both `initdb` and `pg_ctl`: `KMS_TEST_POSTGRES_BIN`, else the newest
/// `/usr/lib/postgresql/<major>/bin`, else the first `PATH` entry holding both.
pub(crate) fn find() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os(BIN_ENV) {
        let dir = PathBuf::from(dir);
        return if has_programs(&dir) {
            Ok(dir)
        } else {
            Err(format!(
                "{BIN_ENV}={} holds no initdb and pg_ctl",
                dir.display()
            ))
        };
    }
    newest_debian_version(Path::new(DEBIAN_ROOT))
        .or_else(on_path)
        .ok_or_else(|| {
            format!(
                "the tests need a PostgreSQL server: no initdb and pg_ctl under \
                 {DEBIAN_ROOT}/*/bin or on PATH; install them (apt-get install postgresql) \
                 or point the tests at a running server with \
                 {}=postgres://USER@HOST:PORT/DB",
                crate::URL_ENV
            )
        })
}

fn has_programs(dir: &Path) -> bool {
    dir.join("initdb").is_file() && dir.join("pg_ctl").is_file()
}

/// `root/<major>/bin` for the highest numeric `<major>` that has both programs.
fn newest_debian_version(root: &Path) -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            has_programs(&bin).then_some((major, bin))
        })
        .collect();
    versions.sort_by_key(|(major, _)| *major);
    versions.pop().map(|(_, bin)| bin)
}

fn on_path() -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).find(|dir| has_programs(dir))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn fake_version(root: &Path, major: &str, complete: bool) {
        let bin = root.join(major).join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::write(bin.join("initdb"), "").unwrap();
        if complete {
            std::fs::write(bin.join("pg_ctl"), "").unwrap();
        }
    }

    #[test]
    fn the_newest_complete_major_version_wins() {
        let root = tempfile::tempdir().unwrap();
        fake_version(root.path(), "9", true);
        fake_version(root.path(), "15", true);
        fake_version(root.path(), "17", false);
        std::fs::create_dir_all(root.path().join("common")).unwrap();
        assert_eq!(
            newest_debian_version(root.path()),
            Some(root.path().join("15").join("bin"))
        );
    }

    #[test]
    fn no_versions_means_none() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(newest_debian_version(root.path()), None);
        assert_eq!(newest_debian_version(&root.path().join("absent")), None);
    }
}
