//! /proc/PID/cmdline and the secret redaction applied to it before it leaves the agent.
#![no_main]
use libfuzzer_sys::fuzz_target;
use osl_agent::{proc::parse, redact};

const MARK_STR: &str = "<redacted>";
const MARK: &[u8] = MARK_STR.as_bytes();

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
    // A secret in the usual places never survives, whatever its letters, nor where a
    // wrapper or a shell command string puts its command (one way of running them an
    // input, chosen by its length).
    let secret: Vec<u8> = data.iter().copied().filter(u8::is_ascii_alphanumeric).take(24).collect();
    if secret.len() >= 4 {
        let s = String::from_utf8(secret).unwrap();
        // An AWS access key id's 16 characters.
        let key_id: String = s.to_ascii_uppercase().chars().cycle().take(16).collect();
        let run = RUNS[data.len() % RUNS.len()];
        for form in FORMS {
            let fill =
                |s: &str, k: &str| run(&form.iter().map(|t| t.replace("{}", s).replace("{K}", k)).collect::<Vec<_>>());
            let words = fill(" ", " ").join(" ");
            let mut args: Vec<Vec<u8>> = fill(&s, &key_id).into_iter().map(String::into_bytes).collect();
            redact::redact_args(&mut args);
            for (mark, secret) in [("{}", &s), ("{K}", &key_id)] {
                if !form.iter().any(|t| t.contains(mark))
                    || words.contains(secret.as_str())
                    || MARK_STR.contains(secret.as_str())
                {
                    continue; // not in this form, or it spells a word of the command or of the mark
                }
                assert!(
                    args.iter().all(|a| find(a, secret.as_bytes()).is_none()),
                    "{secret} left in {form:?}: {args:?}"
                );
            }
        }
    }
});

/// Commands with a secret where `{}` is (`{K}`: an AWS access key id's 16 characters).
const FORMS: &[&[&str]] = &[
    &["app", "--password", "{}"],
    &["app", "--password={}"],
    &["app", "--api-key={}"],
    &["sh", "-c", "PGPASSWORD={} psql -h db"],
    &["curl", "https://user:{}@host/path"],
    &["curl", "-H", "Authorization: Bearer {}"],
    &["mysql", "-p{}"],
    &["sshpass", "-p", "{}", "ssh", "-p", "22", "host"],
    &["sshpass", "-p{}", "ssh", "host"],
    &["redis-cli", "-h", "cache", "-a", "{}", "ping"],
    &["app", "--pass", "{}"],
    &["curl", "-u", "user:{}", "https://h"],
    &["curl", "-H", "X-Api-Key: {}", "https://h"],
    &["curl", "-H", "X-Api-Key:", "{}"],
    &["curl", "-H", "X-Api-Key:{}"],
    &["curl", "--header", "PRIVATE-TOKEN: {}"],
    &["curl", "-H", "Authorization:Bearer {}"],
    &["sh", "-c", "mysql -uroot -p{} db"],
    &["env", "MYSQL_PWD={}", "mysql"],
    &["env", "REDISCLI_AUTH={}", "redis-cli"],
    &["keytool", "-list", "-storepass", "{}", "-keypass", "{}"],
    &["keytool", "-importkeystore", "-srcstorepass", "{}", "-deststorepass", "{}"],
    &["openssl", "pkcs12", "-passin", "pass:{}", "-passout", "pass:{}"],
    &["sqlplus", "-s", "scott/{}@orcl"],
    &["curl", "https://h/p?sig={}&x=1"],
    &["curl", "https://h/p?x=1&key={}"],
    &["curl", "https://h/p?token={}"],
    &["aws", "configure", "set", "aws_secret_access_key", "{}"],
    &["app", "eyJhbGciOiJIUzI1NiJ9.eyJ{}.{}"],
    &["app", "--auth=jwt:eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.{}"],
    &["app", "--id", "AKIA{K}"],
    &["app", "ASIA{K},x"],
    &["psql", "postgres://u:x{}/{}@host/db"],
];

/// The ways a command is run: as it is, under sudo or env, in a shell command string.
const RUNS: &[fn(&[String]) -> Vec<String>] = &[
    |form| form.to_vec(),
    |form| ["sudo", "-u", "root"].iter().map(|w| w.to_string()).chain(form.iter().cloned()).collect(),
    |form| ["env", "LANG=C"].iter().map(|w| w.to_string()).chain(form.iter().cloned()).collect(),
    |form| vec!["sh".into(), "-c".into(), shell_line(form)],
    |form| vec!["/bin/bash".into(), "-c".into(), format!("cd /app && exec {}", shell_line(form))],
];

/// The command as a shell reads it: words that are not plain in single quotes.
fn shell_line(form: &[String]) -> String {
    let plain = |w: &str| w.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-./:=@,".contains(&b));
    form.iter().map(|w| if plain(w) { w.clone() } else { format!("'{w}'") }).collect::<Vec<_>>().join(" ")
}

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
