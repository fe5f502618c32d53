//! Reading inputs and writing outputs: files or stdin/stdout, binary or base64, secrets kept in
//! wiped buffers and written with mode 0600.

use std::fs;
use std::io::{self, IsTerminal, Read, Write};
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

use crate::error::CliError;

/// True when `path` means stdin/stdout: absent, or `-`.
fn is_std(path: Option<&Path>) -> bool {
    path.is_none_or(|p| p == Path::new("-"))
}

/// Reads `path`, or stdin when it is absent or `-`, into a buffer that is wiped on drop.
///
/// # Errors
/// When the file or stdin cannot be read.
pub fn read_input(path: Option<&Path>) -> Result<Zeroizing<Vec<u8>>, CliError> {
    let mut buf = Zeroizing::new(Vec::new());
    match path {
        Some(p) if !is_std(Some(p)) => {
            let mut file =
                fs::File::open(p).map_err(|e| CliError::io(&p.display().to_string(), &e))?;
            file.read_to_end(&mut buf)
                .map_err(|e| CliError::io(&p.display().to_string(), &e))?;
        }
        Some(_) | None => {
            if io::stdin().is_terminal() {
                eprintln!("(reading stdin until end of input: Ctrl-D)");
            }
            io::stdin()
                .lock()
                .read_to_end(&mut buf)
                .map_err(|e| CliError::io("stdin", &e))?;
        }
    }
    Ok(buf)
}

/// Reads input that may be base64 text (`base64` true): decoded, surrounding whitespace ignored.
///
/// # Errors
/// When reading fails or the base64 does not decode.
pub fn read_maybe_base64(
    path: Option<&Path>,
    base64: bool,
    what: &str,
) -> Result<Zeroizing<Vec<u8>>, CliError> {
    let raw = read_input(path)?;
    if base64 {
        decode_base64(&raw, what)
    } else {
        Ok(raw)
    }
}

/// Decodes base64 text, ignoring ASCII whitespace anywhere in it (line-wrapped input is fine).
///
/// # Errors
/// A usage error naming `what` when the text is not base64.
pub fn decode_base64(text: &[u8], what: &str) -> Result<Zeroizing<Vec<u8>>, CliError> {
    let compact: Zeroizing<Vec<u8>> = Zeroizing::new(
        text.iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect(),
    );
    STANDARD
        .decode(compact.as_slice())
        .map(Zeroizing::new)
        .map_err(|e| {
            CliError::usage(format!("{what} is not valid base64: {e}"))
                .with_hint("leave out --base64 for binary input")
        })
}

/// Base64 text of `data` (standard alphabet, padded).
#[must_use]
pub fn base64(data: &[u8]) -> String {
    STANDARD.encode(data)
}

/// How to write bytes to a file or stdout.
#[derive(Debug, Clone, Copy)]
pub struct WriteOpts {
    /// Write base64 text (with a trailing newline) instead of the bytes.
    pub base64: bool,
    /// The bytes are binary (ciphertext, signature, tag, random): shown as base64 on a terminal.
    pub binary: bool,
    /// The bytes are secret: a file gets mode 0600.
    pub private: bool,
}

/// Writes `data` to `path`, or stdout when it is absent or `-`, as `opts` says.
///
/// # Errors
/// When the file or stdout cannot be written (a closed stdout pipe is not an error).
pub fn write_output(path: Option<&Path>, data: &[u8], opts: WriteOpts) -> Result<(), CliError> {
    let to_stdout = is_std(path);
    let as_text = opts.base64 || (to_stdout && opts.binary && io::stdout().is_terminal());
    let bytes: Zeroizing<Vec<u8>> = if as_text {
        Zeroizing::new(format!("{}\n", base64(data)).into_bytes())
    } else {
        Zeroizing::new(data.to_vec())
    };
    match path {
        Some(p) if !to_stdout => write_file(p, &bytes, opts.private),
        Some(_) | None => write_stdout(&bytes),
    }
}

/// Whether `path` is an existing file that is neither a regular file nor a folder: a device
/// (`/dev/null`, `/dev/stdout`), a FIFO or a socket. Such an output is written in place: no
/// mode change (the CLI runs as root in places, and must never chmod `/dev/null`), no
/// `NAME.partial` beside it and no rename over it.
#[must_use]
pub fn is_special(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir())
}

/// Opens a special file ([`is_special`]) for writing, as it is.
///
/// # Errors
/// When it cannot be opened.
pub fn open_special(path: &Path) -> Result<fs::File, CliError> {
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| CliError::io(&path.display().to_string(), &e))
}

/// Writes a file, mode 0600 when `private`; a special file is written in place.
///
/// # Errors
/// When it cannot be written.
pub fn write_file(path: &Path, data: &[u8], private: bool) -> Result<(), CliError> {
    if is_special(path) {
        return open_special(path)?
            .write_all(data)
            .map_err(|e| CliError::io(&path.display().to_string(), &e));
    }
    if private {
        kms_devpki::write_private_file(path, data).map_err(|e| CliError::other(e.to_string()))
    } else {
        fs::write(path, data).map_err(|e| CliError::io(&path.display().to_string(), &e))
    }
}

/// Creates (or truncates) a file for writing with mode 0600.
///
/// # Errors
/// When it cannot be created.
pub fn create_private(path: &Path) -> Result<fs::File, CliError> {
    if is_special(path) {
        return open_special(path);
    }
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        options.mode(0o600);
        let file = options
            .open(path)
            .map_err(|e| CliError::io(&path.display().to_string(), &e))?;
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(|e| CliError::io(&path.display().to_string(), &e))?;
        Ok(file)
    }
    #[cfg(not(unix))]
    {
        options
            .open(path)
            .map_err(|e| CliError::io(&path.display().to_string(), &e))
    }
}

/// Writes to stdout and flushes; a closed pipe (`kms … | head -c 10`) is not an error.
///
/// # Errors
/// When stdout cannot be written for another reason.
pub fn write_stdout(data: &[u8]) -> Result<(), CliError> {
    let mut out = io::stdout().lock();
    match out.write_all(data).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CliError::io("stdout", &e)),
    }
}

/// Prints a line to stdout (see [`write_stdout`]).
///
/// # Errors
/// When stdout cannot be written.
pub fn println(text: &str) -> Result<(), CliError> {
    let mut line = String::with_capacity(text.len() + 1);
    line.push_str(text);
    if !line.ends_with('\n') {
        line.push('\n');
    }
    write_stdout(line.as_bytes())
}

/// Reads unseal shares from files: every non-empty line is a share (`-` reads stdin).
///
/// # Errors
/// When a file cannot be read or holds no share.
pub fn read_shares(paths: &[std::path::PathBuf]) -> Result<Vec<Zeroizing<String>>, CliError> {
    let mut shares = Vec::new();
    for path in paths {
        let raw = read_input(Some(path))?;
        let text = std::str::from_utf8(&raw)
            .map_err(|_| CliError::usage(format!("share file {} is not text", path.display())))?;
        let before = shares.len();
        shares.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(|l| Zeroizing::new(l.to_owned())),
        );
        if shares.len() == before {
            return Err(CliError::usage(format!(
                "share file {} holds no share",
                path.display()
            )));
        }
    }
    Ok(shares)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_input_may_be_wrapped() {
        let decoded = decode_base64(b"aGVs\nbG8=\n", "x").unwrap();
        assert_eq!(decoded.as_slice(), b"hello");
        let err = decode_base64(b"not base64!", "the signature").unwrap_err();
        assert!(err.message.starts_with("the signature is not valid base64"));
    }

    #[test]
    fn shares_are_the_non_empty_lines_of_each_file() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        fs::write(&a, "# share 1\nabc\n\n").unwrap();
        fs::write(&b, " def \nghi\n").unwrap();
        let shares = read_shares(&[a, b.clone()]).unwrap();
        let shares: Vec<&str> = shares.iter().map(|s| s.as_str()).collect();
        assert_eq!(shares, ["abc", "def", "ghi"]);
        fs::write(&b, "\n").unwrap();
        let err = read_shares(std::slice::from_ref(&b)).unwrap_err();
        assert_eq!(err.kind, crate::error::ExitKind::Usage);
        assert_eq!(
            err.message,
            format!("share file {} holds no share", b.display())
        );
    }

    #[cfg(unix)]
    #[test]
    fn private_outputs_are_mode_0600() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pt");
        let opts = WriteOpts {
            base64: false,
            binary: false,
            private: true,
        };
        write_output(Some(&path), b"secret", opts).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"secret");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let b64 = WriteOpts {
            base64: true,
            ..opts
        };
        write_output(Some(&path), b"hi", b64).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "aGk=\n");
    }
}
