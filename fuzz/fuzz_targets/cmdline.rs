//! /proc/PID/cmdline and the secret redaction applied to it before it leaves the agent.
#![no_main]
use libfuzzer_sys::fuzz_target;
use osl_agent::{proc::parse, redact};

const MARK: &[u8] = b"<redacted>";

fuzz_target!(|data: &[u8]| {
    let mut args = parse::parse_cmdline(data);
    let before = args.clone();
    let redacted = redact::redact_args(&mut args);
    assert_eq!(args.len(), before.len(), "redaction never adds or drops an argument");
    if args != before {
        assert!(redacted, "a change is reported");
    }
    // Redaction only replaces: what is left of each argument is its own text, in order.
    for (out, orig) in args.iter().zip(&before) {
        let mut rest = &orig[..];
        for piece in split_marks(out) {
            let at = find(rest, piece).unwrap_or_else(|| panic!("{piece:?} is not from {orig:?}"));
            rest = &rest[at + piece.len()..];
        }
    }
    // A secret in the usual places never survives, whatever its letters.
    let secret: Vec<u8> = data.iter().copied().filter(u8::is_ascii_alphanumeric).take(24).collect();
    if secret.len() >= 4 {
        let s = String::from_utf8(secret).unwrap();
        let forms: [&[&str]; 7] = [
            &["app", "--password", "{}"],
            &["app", "--password={}"],
            &["app", "--api-key={}"],
            &["sh", "-c", "PGPASSWORD={} psql -h db"],
            &["curl", "https://user:{}@host/path"],
            &["curl", "-H", "Authorization: Bearer {}"],
            &["mysql", "-p{}"],
        ];
        for form in forms {
            if form.iter().any(|t| t.replace("{}", " ").contains(&s)) || "<redacted>".contains(&s) {
                continue; // the secret spells a word of the command, or of the mark
            }
            let mut args: Vec<Vec<u8>> = form.iter().map(|t| t.replace("{}", &s).into_bytes()).collect();
            redact::redact_args(&mut args);
            assert!(args.iter().all(|a| find(a, s.as_bytes()).is_none()), "{s} left in {form:?}: {args:?}");
        }
    }
});

fn split_marks(mut s: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let Some(at) = find(s, MARK) {
        out.push(&s[..at]);
        s = &s[at + MARK.len()..];
    }
    out.push(s);
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}
