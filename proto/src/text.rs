//! Lossless, printable text for bytes from the kernel.
//!
//! comm, cmdline, paths and socket names are bytes, not UTF-8, and may hold
//! newlines or escape sequences. osl sends and shows them escaped: valid printable
//! UTF-8 as is, `\\` for a backslash, `\n` `\t` `\r`, and `\xNN` for any other
//! control character or any byte that is not part of valid UTF-8. [`unescape`]
//! gives the original bytes back, so nothing is lost on the way to JSON.

/// Escapes kernel bytes into printable text (see the module doc).
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c if c.is_control() => {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        push_hex(&mut out, b);
                    }
                }
                c => out.push(c),
            }
        }
        for &b in chunk.invalid() {
            push_hex(&mut out, b);
        }
    }
    out
}

fn push_hex(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push_str("\\x");
    out.push(HEX[usize::from(b >> 4)] as char);
    out.push(HEX[usize::from(b & 0xf)] as char);
}

/// An escape sequence [`unescape`] does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown escape sequence at byte {offset}")]
pub struct BadEscape {
    pub offset: usize,
}

/// Reverses [`escape`].
pub fn unescape(text: &str) -> Result<Vec<u8>, BadEscape> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let bad = BadEscape { offset: i };
        match bytes.get(i + 1) {
            Some(b'\\') => out.push(b'\\'),
            Some(b'n') => out.push(b'\n'),
            Some(b't') => out.push(b'\t'),
            Some(b'r') => out.push(b'\r'),
            Some(b'x') => {
                let hex = text.get(i + 2..i + 4).ok_or(bad.clone())?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| bad)?);
                i += 2;
            }
            _ => return Err(bad),
        }
        i += 2;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_utf8_passes_through() {
        assert_eq!(escape("java -Xmx1g héllo 日本".as_bytes()), "java -Xmx1g héllo 日本");
    }

    #[test]
    fn control_bytes_newlines_and_invalid_utf8_are_escaped() {
        assert_eq!(escape(b"a\nb\tc\\d"), "a\\nb\\tc\\\\d");
        assert_eq!(escape(b"\x1b[31mred"), "\\x1b[31mred");
        assert_eq!(escape(b"bad\xff\xfe.log"), "bad\\xff\\xfe.log");
        assert_eq!(escape(b"\0"), "\\x00");
        // C1 control (U+0085) is valid UTF-8 but not printable.
        assert_eq!(escape("x\u{85}".as_bytes()), "x\\xc2\\x85");
    }

    #[test]
    fn every_byte_sequence_round_trips() {
        let samples: [&[u8]; 5] = [b"", b"plain", b"\\x41 is not A", b"\xff\n\x00\\", "é\u{7f}".as_bytes()];
        for s in samples {
            assert_eq!(unescape(&escape(s)).unwrap(), s, "{s:?}");
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(unescape(&escape(&all)).unwrap(), all);
    }

    #[test]
    fn unknown_escapes_are_errors() {
        assert_eq!(unescape("a\\q"), Err(BadEscape { offset: 1 }));
        assert_eq!(unescape("a\\x4"), Err(BadEscape { offset: 1 }));
        assert_eq!(unescape("\\"), Err(BadEscape { offset: 0 }));
    }
}
