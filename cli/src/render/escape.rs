//! Text from the pod made safe for a terminal.
//!
//! Every string the agent sends (process names, command lines, paths, socket
//! names, findings, reports, its error messages) is written by processes in the
//! pod, which may be hostile: an ESC clears the screen or rewrites what was
//! printed before, a CR or BS overprints a line, a bidi override (U+202E) shows
//! `evil` as `live`, a zero-width space makes two names look alike. Before a
//! table or a line shows them, control characters (C0, DEL, C1) and Unicode's
//! bidi and invisible format characters become visible escapes: `\n`, `\t`,
//! `\r`, `\x1b` (below U+0080) and `\u{202e}` (above). Everything else, CJK and
//! accents included, is left as it is.
//!
//! The agent already sends kernel bytes escaped (`\x1b`, `\\`: see
//! `osl_proto::text`); a backslash is not escaped again here, so that text reads
//! as the agent wrote it, and escaping twice changes nothing.
//!
//! JSON and YAML are not escaped here: they are the data, and their own
//! encoders escape control characters.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether a terminal could be steered or fooled by `c`.
fn unsafe_char(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_control(); // C0 and DEL; the common case, decided at once
    }
    c.is_control() // C0 (ESC, CR, BS, NUL…), DEL and C1 (U+0080..U+009F, CSI U+009B)
        || matches!(
            c,
            '\u{00AD}'                       // soft hyphen (invisible)
            | '\u{061C}'                     // Arabic letter mark
            | '\u{180E}'                     // Mongolian vowel separator
            | '\u{200B}'..='\u{200F}'        // zero-width space, non-joiner, joiner; LRM, RLM
            | '\u{2028}'..='\u{202E}'        // line and paragraph separators; LRE, RLE, PDF, LRO, RLO
            | '\u{2060}'..='\u{2064}'        // word joiner, invisible operators
            | '\u{2066}'..='\u{206F}'        // LRI, RLI, FSI, PDI; deprecated format characters
            | '\u{FEFF}'                     // zero-width no-break space (BOM)
            | '\u{FFF9}'..='\u{FFFB}'        // interlinear annotation
            | '\u{E0000}'..='\u{E007F}' // tag characters (invisible ASCII)
        )
}

/// `s` with every unsafe character escaped; borrowed when there is none.
pub fn text(s: &str) -> Cow<'_, str> {
    if !s.chars().any(unsafe_char) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if unsafe_char(c) && u32::from(c) < 0x80 => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c if unsafe_char(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A copy of an answer with every string in it escaped (map keys too), for the
/// table renderers: they then draw it as it is, and a field added to the
/// protocol later is escaped without anyone remembering to.
///
/// The usual answer has nothing to escape, and is cloned once that is known:
/// compact JSON writes a control character in a string as a backslash escape
/// other than `\\` and `\"`, and every other character as it is, so JSON with
/// no such escape and no unsafe character has no string that needs escaping (a
/// finding quoting "Too many open files" does not send a 17,000-fd answer down
/// the slow path). Otherwise the strings are escaped in YAML's value tree of the
/// message, which keeps what JSON's would lose (NaN and infinite floats).
pub fn message<T>(msg: &T) -> Result<Cow<'_, T>, serde_norway::Error>
where
    T: serde::Serialize + serde::de::DeserializeOwned + Clone,
{
    if !super::scan::any_string(msg, unsafe_char) {
        return Ok(Cow::Borrowed(msg));
    }
    let mut value = serde_norway::to_value(msg)?;
    if escape_value(&mut value) { serde_norway::from_value(value).map(Cow::Owned) } else { Ok(Cow::Borrowed(msg)) }
}

/// Escapes every string in `v`; true if one changed.
fn escape_value(v: &mut serde_norway::Value) -> bool {
    use serde_norway::Value;
    match v {
        Value::String(s) => match text(s) {
            Cow::Owned(escaped) => {
                *s = escaped;
                true
            }
            Cow::Borrowed(_) => false,
        },
        Value::Sequence(items) => items.iter_mut().fold(false, |changed, item| escape_value(item) | changed),
        Value::Mapping(map) => {
            let unsafe_keys: Vec<Value> =
                map.keys().filter(|k| k.as_str().is_some_and(|k| k.chars().any(unsafe_char))).cloned().collect();
            for key in &unsafe_keys {
                if let (Some(value), Some(k)) = (map.remove(key), key.as_str()) {
                    map.insert(Value::String(text(k).into_owned()), value);
                }
            }
            map.values_mut().fold(!unsafe_keys.is_empty(), |changed, value| escape_value(value) | changed)
        }
        Value::Tagged(tagged) => escape_value(&mut tagged.value),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use osl_proto::v1;

    #[test]
    fn controls_and_bidi_become_visible_and_the_rest_stays() {
        assert_eq!(text("\x1b[2Jgone"), "\\x1b[2Jgone");
        assert_eq!(text("a\rb\x08c\x7f"), "a\\rb\\x08c\\x7f");
        assert_eq!(text("line\nnext\tcol"), "line\\nnext\\tcol");
        assert_eq!(text("\u{9b}31m"), "\\u{9b}31m", "C1 CSI");
        assert_eq!(text("\u{85}"), "\\u{85}");
        assert_eq!(text("evil\u{202e}txt.exe"), "evil\\u{202e}txt.exe");
        for c in ['\u{202a}', '\u{202d}', '\u{2066}', '\u{2069}', '\u{200e}', '\u{200f}', '\u{61c}'] {
            assert_eq!(text(&c.to_string()), format!("\\u{{{:x}}}", u32::from(c)));
        }
        for c in ['\u{200b}', '\u{200c}', '\u{200d}', '\u{feff}', '\u{2028}', '\u{e0041}'] {
            assert!(text(&format!("a{c}b")).starts_with("a\\u{"), "{c:?}");
        }
        // Ordinary text, and what the agent already escaped, as it is (no copy).
        for plain in ["日本語のプロセス", "café naïve Ωμέγα", "emoji 🦀", "\\x1b[2J from the agent", "a\\\\b", ""]
        {
            assert!(matches!(text(plain), Cow::Borrowed(p) if p == plain), "{plain}");
        }
    }

    #[test]
    fn escaping_twice_changes_nothing() {
        let hostile = "\x1b]0;title\x07\u{202e}\u{200b}\r\n\u{9b}x 日本\\x41";
        let once = text(hostile).into_owned();
        assert_eq!(text(&once), once);
        assert!(once.chars().all(|c| !unsafe_char(c)), "{once}");
    }

    #[test]
    fn only_an_unsafe_character_takes_the_slow_path() {
        let finding = |m: &str| v1::Finding { message: m.into(), ..Default::default() };
        for safe in ["fail with EMFILE \"Too many open files\"", "C:\\dir", "agent-escaped \\x1b", "日本語"] {
            assert!(!super::super::scan::any_string(&finding(safe), unsafe_char), "{safe:?}");
        }
        for bad in ["a\nb", "tab\t", "esc\x1b", "\u{202e}rtl", "del\x7f", "c1 \u{9b}"] {
            assert!(super::super::scan::any_string(&finding(bad), unsafe_char), "{bad:?}");
        }
        let key = v1::Finding { evidence: [("k\x1b".to_string(), "v".to_string())].into(), ..Default::default() };
        assert!(super::super::scan::any_string(&key, unsafe_char), "map keys are strings too");
    }

    #[test]
    fn every_string_of_a_message_is_escaped_and_the_numbers_kept() {
        let resp = v1::DiagnoseResponse {
            processes: vec![v1::Process {
                pid: 42,
                comm: "x\x1b[2J".into(),
                cmdline: vec!["run".into(), "\u{202e}gnp.exe".into()],
                state: 999, // a value this CLI does not know
                ..Default::default()
            }],
            findings: vec![v1::Finding {
                message: "a\nCRITICAL fake".into(),
                evidence: [("key\x1b".to_string(), "v\u{200b}".to_string())].into(),
                ..Default::default()
            }],
            fd_totals: None,
            containers: vec![v1::Container {
                cpu: Some(v1::CgroupCpu { usage_usec: Some(u64::MAX), ..Default::default() }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut nan = resp.clone();
        nan.processes[0].fd_trend = Some(v1::FdTrend { slope_per_sec: f64::NAN, ..Default::default() });
        let e = message(&nan).unwrap().into_owned();
        assert!(e.processes[0].fd_trend.as_ref().unwrap().slope_per_sec.is_nan());
        assert_eq!(e.processes[0].comm, "x\\x1b[2J");
        assert_eq!(e.processes[0].cmdline, ["run", "\\u{202e}gnp.exe"]);
        assert_eq!(e.processes[0].state, 999);
        assert_eq!(e.findings[0].message, "a\\nCRITICAL fake");
        assert_eq!(e.findings[0].evidence, [("key\\x1b".to_string(), "v\\u{200b}".to_string())].into());
        assert_eq!(e.containers[0].cpu.as_ref().unwrap().usage_usec, Some(u64::MAX));
        // Nothing to escape: the same message back (a quote and the agent's own escapes too).
        let clean = v1::DiagnoseResponse { processes: vec![v1::Process::default()], ..Default::default() };
        assert_eq!(*message(&clean).unwrap(), clean);
        let quoted = v1::Process { comm: "say \"hi\" \\x1b 日本".into(), ..Default::default() };
        assert_eq!(*message(&quoted).unwrap(), quoted);
        // What compact JSON leaves raw (DEL, C1, bidi) is found as surely as what it escapes.
        for raw in ["\x7f", "\u{9b}", "\u{2066}", "\x1b", "\0"] {
            let p = v1::Process { comm: format!("a{raw}b"), ..Default::default() };
            assert_eq!(message(&p).unwrap().comm, format!("a{}b", text(raw)), "{raw:?}");
            assert_ne!(message(&p).unwrap().comm, p.comm, "{raw:?}");
        }
    }
}
