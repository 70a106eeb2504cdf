//! Command-line redaction. The environment is never read; arguments that look like
//! credentials are replaced, so a diagnosis can be pasted into a ticket.
//!
//! Each argument is read as words (an argument may hold a whole shell command), a
//! word as pieces between `,` `;` `&` `?` (option lists, query strings). Redacted:
//! the value of a secret-looking `key=value`; the word after a secret-looking
//! `--flag`, after `Bearer`/`Basic`/`Token` and after `Authorization:`; the
//! user-info of every URL (`scheme://user:pass@host`) and of Go DSNs
//! (`user:pass@tcp(host)`); and mysql's `-pSECRET`. Linear in the input.

pub const REDACTED: &[u8] = b"<redacted>";

/// Words that mark a key (`--db-password=…`, `API_TOKEN=…`) as secret.
const SECRET_WORDS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "apikey",
    "api-key",
    "api_key",
    "access-key",
    "access_key",
    "accesskey",
    "private-key",
    "private_key",
    "credential",
    "authorization",
];

const AUTH_SCHEMES: &[&[u8]] = &[b"bearer", b"basic", b"token", b"digest"];

/// Redacts in place; returns whether anything was redacted.
pub fn redact_args(args: &mut [Vec<u8>]) -> bool {
    let program = args.first().map(|a| a.rsplit(|&b| b == b'/').next().unwrap_or(a).to_vec()).unwrap_or_default();
    let mysql = program.starts_with(b"mysql") || program.starts_with(b"mariadb");
    let mut pending = Pending::None;
    let mut redacted = false;
    for arg in args.iter_mut() {
        let ranges = secret_ranges(arg, &mut pending, mysql);
        if !ranges.is_empty() {
            *arg = replace(arg, &ranges);
            redacted = true;
        }
    }
    redacted
}

/// What the next word is, carried across words and arguments.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Pending {
    #[default]
    None,
    /// After `--password`, `--token`, `Bearer`…: the next word is the secret.
    Value,
    /// After `Authorization:`: one optional scheme, then the secret.
    Scheme,
}

/// Byte ranges of `arg` that hold secrets, sorted and merged. `pending` carries
/// "the next word is a secret" across arguments.
fn secret_ranges(arg: &[u8], pending: &mut Pending, mysql: bool) -> Vec<(usize, usize)> {
    let mut ranges = Vec::new();
    for (start, word) in split_keep_offsets(arg, |b| b.is_ascii_whitespace()) {
        let end = start + word.len();
        let lower = word.to_ascii_lowercase();
        let scheme = AUTH_SCHEMES.contains(&lower.as_slice());
        let was = std::mem::take(pending);
        // `Authorization: Bearer x`: the scheme is kept, the credential after it is not.
        if was == Pending::Scheme && scheme {
            *pending = Pending::Value;
            continue;
        }
        // The value of `--password VALUE` is a secret whatever it spells, `token` too
        // (found by fuzzing: an auth scheme's name was taken as a scheme there).
        if was != Pending::None && !word.starts_with(b"-") {
            ranges.push((start, end));
            continue;
        }
        if lower.ends_with(b"authorization:") {
            *pending = Pending::Scheme;
            continue;
        }
        if scheme {
            *pending = Pending::Value;
            continue;
        }
        // Before the flag check: `-pPASSWORD` itself reads as a secret flag (found by
        // fuzzing: `mysql -ppasswd1` was left whole, the next word redacted instead).
        if mysql && word.starts_with(b"-p") && !word.starts_with(b"--") && word.len() > 2 {
            ranges.push((start + 2, end));
            continue;
        }
        if word.starts_with(b"-") && !word.contains(&b'=') && is_secret_key(word) {
            *pending = Pending::Value;
            continue;
        }
        for (p, piece) in split_keep_offsets(word, |b| matches!(b, b',' | b';' | b'&' | b'?')) {
            if let Some(eq) = piece.iter().position(|&b| b == b'=')
                && is_secret_key(&piece[..eq])
                && eq + 1 < piece.len()
            {
                ranges.push((start + p + eq + 1, start + p + piece.len()));
            }
        }
        ranges.extend(userinfo_ranges(word).into_iter().map(|(a, b)| (start + a, start + b)));
    }
    ranges.sort_unstable();
    let mut merged: Vec<(usize, usize)> = Vec::with_capacity(ranges.len());
    for (a, b) in ranges {
        match merged.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    merged
}

fn is_secret_key(key: &[u8]) -> bool {
    let key = String::from_utf8_lossy(key).to_ascii_lowercase();
    SECRET_WORDS.iter().any(|w| key.contains(w))
}

/// Non-empty pieces of `s` between separators, with their offsets.
fn split_keep_offsets(s: &[u8], sep: impl Fn(u8) -> bool) -> impl Iterator<Item = (usize, &[u8])> {
    let mut start = 0;
    s.split(move |&b| sep(b)).filter_map(move |piece| {
        let at = start;
        start += piece.len() + 1;
        (!piece.is_empty()).then_some((at, piece))
    })
}

/// The user-info of every `scheme://user:pass@host` in a word, and of Go DSNs
/// (`user:pass@tcp(host)/db`, `@unix(`).
fn userinfo_ranges(word: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(found) = find(&word[i..], b"://") {
        let begin = i + found + 3;
        let len = word[begin..]
            .iter()
            .position(|&b| matches!(b, b'/' | b'?' | b'#' | b',' | b';'))
            .unwrap_or(word.len() - begin);
        if let Some(at) = word[begin..begin + len].iter().rposition(|&b| b == b'@') {
            out.push((begin, begin + at));
        }
        i = begin + len;
    }
    for marker in [&b"@tcp("[..], b"@unix("] {
        let mut from = 0;
        while let Some(at) = find(&word[from..], marker).map(|p| from + p) {
            let segment_start =
                word[..at].iter().rposition(|&b| matches!(b, b'=' | b',' | b';' | b'/')).map_or(0, |p| p + 1);
            if let Some(colon) = word[segment_start..at].iter().position(|&b| b == b':') {
                out.push((segment_start + colon + 1, at));
            }
            from = at + marker.len();
        }
    }
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn replace(arg: &[u8], ranges: &[(usize, usize)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(arg.len());
    let mut at = 0;
    for &(a, b) in ranges {
        out.extend_from_slice(&arg[at..a]);
        out.extend_from_slice(REDACTED);
        at = b;
    }
    out.extend_from_slice(&arg[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> (Vec<String>, bool) {
        let mut v: Vec<Vec<u8>> = args.iter().map(|a| a.as_bytes().to_vec()).collect();
        let r = redact_args(&mut v);
        (v.into_iter().map(|a| String::from_utf8(a).unwrap()).collect(), r)
    }

    #[test]
    fn key_value_secrets_are_redacted() {
        let (out, r) = run(&["app", "--db-password=hunter2", "API_TOKEN=abc", "--client_secret=s", "--port=80"]);
        assert!(r);
        assert_eq!(
            out,
            ["app", "--db-password=<redacted>", "API_TOKEN=<redacted>", "--client_secret=<redacted>", "--port=80"]
        );
    }

    #[test]
    fn flag_then_value_secrets_are_redacted() {
        let (out, _) = run(&["mysql", "--password", "hunter2", "--user", "root", "--token", "--verbose"]);
        assert_eq!(out, ["mysql", "--password", "<redacted>", "--user", "root", "--token", "--verbose"]);
    }

    #[test]
    fn url_userinfo_is_redacted() {
        let (out, r) = run(&["psql", "postgres://app:hunter2@db:5432/shop?sslmode=require", "--dsn=https://u@h/x"]);
        assert!(r);
        assert_eq!(out, ["psql", "postgres://<redacted>@db:5432/shop?sslmode=require", "--dsn=https://<redacted>@h/x"]);
        let (out, _) = run(&["a=http://x:y@h/,http://p:q@i/"]);
        assert_eq!(out, ["a=http://<redacted>@h/,http://<redacted>@i/"]);
        let (out, _) = run(&["--peers=http://a/,http://u:p@b/"]);
        assert_eq!(out, ["--peers=http://a/,http://<redacted>@b/"], "a URL without user-info does not stop the scan");
    }

    #[test]
    fn secrets_inside_query_strings_shell_commands_and_headers() {
        let (out, _) = run(&["java", "--url=jdbc:postgresql://db/x?user=u&password=s&ssl=true"]);
        assert_eq!(out, ["java", "--url=jdbc:postgresql://db/x?user=u&password=<redacted>&ssl=true"]);
        let (out, _) = run(&["sh", "-c", "mysql --password s -h db && echo done"]);
        assert_eq!(out, ["sh", "-c", "mysql --password <redacted> -h db && echo done"]);
        let (out, _) = run(&["curl", "-H", "Authorization: Bearer abc.def", "https://api/x"]);
        assert_eq!(out, ["curl", "-H", "Authorization: Bearer <redacted>", "https://api/x"]);
        let (out, _) = run(&["curl", "-H", "authorization: abc123"]);
        assert_eq!(out, ["curl", "-H", "authorization: <redacted>"]);
        let (out, _) = run(&["app", "--dsn", "app:hunter2@tcp(db:3306)/shop"]);
        assert_eq!(out, ["app", "--dsn", "app:<redacted>@tcp(db:3306)/shop"]);
        let (out, _) = run(&["/usr/bin/mysql", "-uroot", "-phunter2", "-h", "db"]);
        assert_eq!(out, ["/usr/bin/mysql", "-uroot", "-p<redacted>", "-h", "db"]);
        let (out, _) = run(&["grep", "-pattern"]);
        assert_eq!(out, ["grep", "-pattern"], "-p is only mysql's password");
    }

    #[test]
    fn ordinary_arguments_are_kept() {
        let args = ["nginx", "-g", "daemon off;", "http://example.com/path@x", "--authority-file", "a.pem", "a=b,c=d"];
        let (out, r) = run(&args);
        assert!(!r);
        assert_eq!(out, args);
    }

    #[test]
    fn hostile_arguments_are_linear_not_recursive() {
        let hostile = "a://@".repeat(128 * 1024 / 5);
        let start = std::time::Instant::now();
        let (out, r) = run(&["x", &hostile]);
        assert!(r);
        assert!(out[1].len() < hostile.len() * 3);
        assert!(start.elapsed() < std::time::Duration::from_secs(2), "{:?}", start.elapsed());
        let many_eq = "password=".repeat(20_000);
        let (out, _) = run(&["x", &many_eq]);
        assert!(out[1].starts_with("password=<redacted>"));
    }

    #[test]
    fn the_program_is_judged_by_the_name_it_was_started_with() {
        // Found by fuzzing: redacting argv[0] can make it read as mysql; its
        // `-p…` arguments are no password to the program that really runs.
        let (out, redacted) = run(&["/opt/mysql?token=abc/x", "-print"]);
        assert_eq!(out, ["/opt/mysql?token=<redacted>", "-print"]);
        assert!(redacted);
        let (out, _) = run(&["/usr/bin/mysql", "-phunter2"]);
        assert_eq!(out[1], "-p<redacted>");
    }

    #[test]
    fn a_mysql_password_that_reads_as_a_secret_word_is_redacted() {
        // Found by fuzzing (fuzz/regressions/cmdline/mysql-p-secret-word).
        let (out, _) = run(&["mysql", "-ppasswd3r2", "db"]);
        assert_eq!(out, ["mysql", "-p<redacted>", "db"]);
        let (out, _) = run(&["mysql", "-ptoken", "-h", "db"]);
        assert_eq!(out, ["mysql", "-p<redacted>", "-h", "db"]);
    }

    #[test]
    fn a_password_that_spells_an_auth_scheme_is_redacted() {
        // Found by fuzzing (fuzz/regressions/cmdline/password-token).
        for word in ["token", "Bearer", "basic"] {
            let (out, _) = run(&["app", "--password", word, "--port", "80"]);
            assert_eq!(out, ["app", "--password", "<redacted>", "--port", "80"]);
        }
        let (out, _) = run(&["curl", "-H", "Authorization: Bearer abc", "-H", "Authorization: token def"]);
        assert_eq!(out, ["curl", "-H", "Authorization: Bearer <redacted>", "-H", "Authorization: token <redacted>"]);
        let (out, _) = run(&["curl", "-H", "Authorization: Bearer token"]);
        assert_eq!(out, ["curl", "-H", "Authorization: Bearer <redacted>"]);
    }
}
