//! The CSV that `kms tokenize` and `kms detokenize` read and write (RFC 4180): records end with
//! LF or CRLF, fields are separated by commas, and a field in double quotes may hold commas,
//! line ends and doubled quotes (`""`). What does not follow the RFC is refused with the line
//! it is on rather than guessed at: a quote inside an unquoted field, text after a closing
//! quote, an unclosed quote.
//!
//! Fields are bytes (a column that is not tokenised passes through unchanged, whatever its
//! encoding). On the way out a field is quoted only when it must be (it holds a comma, a quote,
//! CR or LF), and records end as the input's first record ended (CRLF or LF). Both the table
//! and the output buffer are wiped when dropped: the cells are card numbers.

use zeroize::Zeroizing;

/// One record's fields.
pub type Record = Vec<Vec<u8>>;

/// A parsed file.
pub struct Table {
    /// The records, in order.
    pub records: Zeroizing<Vec<Record>>,
    /// Whether records end with CRLF (as the first one did), else LF.
    pub crlf: bool,
}

/// What is wrong with the input, and on which line (from 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvError {
    pub line: usize,
    pub problem: &'static str,
}

impl std::fmt::Display for CsvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CSV line {}: {}", self.line, self.problem)
    }
}

/// Parses `input`. An empty input has no records; a final line end is optional.
///
/// # Errors
/// [`CsvError`] naming the line of the first problem.
pub fn parse(input: &[u8]) -> Result<Table, CsvError> {
    let mut records: Zeroizing<Vec<Record>> = Zeroizing::new(Vec::new());
    let mut crlf = None;
    let mut line = 1;
    let mut i = 0;
    if input.is_empty() {
        return Ok(Table {
            records,
            crlf: false,
        });
    }
    let mut record: Record = Vec::new();
    loop {
        // One field, starting at `i`.
        let mut field = Zeroizing::new(Vec::new());
        if input.get(i) == Some(&b'"') {
            let start_line = line;
            i += 1;
            loop {
                match input.get(i) {
                    None => {
                        return Err(CsvError {
                            line: start_line,
                            problem: "a quoted field is not closed",
                        });
                    }
                    Some(b'"') if input.get(i + 1) == Some(&b'"') => {
                        field.push(b'"');
                        i += 2;
                    }
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(&c) => {
                        if c == b'\n' {
                            line += 1;
                        }
                        field.push(c);
                        i += 1;
                    }
                }
            }
            match input.get(i) {
                None | Some(b',' | b'\n') => {}
                Some(b'\r') if input.get(i + 1) == Some(&b'\n') => {}
                Some(_) => {
                    return Err(CsvError {
                        line,
                        problem: "text after a closing quote (a field in quotes must end at \
                                  its closing quote)",
                    });
                }
            }
        } else {
            loop {
                match input.get(i) {
                    None | Some(b',' | b'\n') => break,
                    Some(b'\r') if input.get(i + 1) == Some(&b'\n') => break,
                    Some(b'"') => {
                        return Err(CsvError {
                            line,
                            problem: "a quote inside an unquoted field (quote the whole field \
                                      and double the quote)",
                        });
                    }
                    Some(&c) => {
                        field.push(c);
                        i += 1;
                    }
                }
            }
        }
        record.push(std::mem::take(&mut *field));
        // What ends the field.
        match input.get(i) {
            Some(b',') => {
                i += 1;
            }
            Some(b'\r') => {
                crlf.get_or_insert(true);
                records.push(std::mem::take(&mut record));
                i += 2;
                line += 1;
                if i >= input.len() {
                    break;
                }
            }
            Some(b'\n') => {
                crlf.get_or_insert(false);
                records.push(std::mem::take(&mut record));
                i += 1;
                line += 1;
                if i >= input.len() {
                    break;
                }
            }
            None => {
                records.push(std::mem::take(&mut record));
                break;
            }
            Some(_) => {
                // Every loop above stops only at a comma, a line end or the end.
                return Err(CsvError {
                    line,
                    problem: "unexpected character",
                });
            }
        }
    }
    Ok(Table {
        records,
        crlf: crlf.unwrap_or(false),
    })
}

/// Appends one record, quoting the fields that need it, and its line end.
pub fn write_record(out: &mut Zeroizing<Vec<u8>>, record: &[Vec<u8>], crlf: bool) {
    for (n, field) in record.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        if field
            .iter()
            .any(|c| matches!(c, b',' | b'"' | b'\r' | b'\n'))
        {
            out.push(b'"');
            for &c in field {
                if c == b'"' {
                    out.push(b'"');
                }
                out.push(c);
            }
            out.push(b'"');
        } else {
            out.extend_from_slice(field);
        }
    }
    out.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
}

/// The whole table written out.
#[must_use]
pub fn write(table: &Table) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::new());
    for r in table.records.iter() {
        write_record(&mut out, r, table.crlf);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(t: &Table) -> Vec<Vec<String>> {
        t.records
            .iter()
            .map(|r| {
                r.iter()
                    .map(|f| String::from_utf8(f.clone()).unwrap())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn rfc_4180_fields_quotes_and_line_ends() {
        let t =
            parse(b"id,pan,note\r\n1,6222020200112233446,\"a, \"\"quoted\"\"\r\nnote\"\r\n2,,x")
                .unwrap();
        assert!(t.crlf);
        assert_eq!(
            fields(&t),
            [
                vec!["id", "pan", "note"],
                vec!["1", "6222020200112233446", "a, \"quoted\"\r\nnote"],
                vec!["2", "", "x"],
            ]
        );
        // Written back: quoted where needed, the input's line ends, a final line end.
        assert_eq!(
            &write(&t)[..],
            b"id,pan,note\r\n1,6222020200112233446,\"a, \"\"quoted\"\"\r\nnote\"\r\n2,,x\r\n"
        );
        let lf = parse(b"a,b\n\"c\",d\n").unwrap();
        assert!(!lf.crlf);
        assert_eq!(fields(&lf), [vec!["a", "b"], vec!["c", "d"]]);
        assert_eq!(&write(&lf)[..], b"a,b\nc,d\n");
        assert_eq!(parse(b"").unwrap().records.len(), 0);
        // A lone line end is one record of one empty field.
        assert_eq!(fields(&parse(b"\n").unwrap()), [vec![""]]);
    }

    #[test]
    fn what_is_not_csv_is_refused_with_its_line() {
        for (input, line, problem) in [
            (&b"a,b\nc\"d,e\n"[..], 2, "a quote inside an unquoted field"),
            (b"a\n\"b\"c\n", 2, "text after a closing quote"),
            (b"a\nb\n\"open,\nstill", 3, "a quoted field is not closed"),
        ] {
            let e = parse(input).err().unwrap();
            assert_eq!(e.line, line, "{e}");
            assert!(e.problem.starts_with(problem), "{e}");
        }
    }
}
