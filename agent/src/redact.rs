//! Command-line redaction. The environment is never read; arguments that look like
//! credentials are replaced, so a diagnosis can be pasted into a ticket.

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

/// Redacts in place; returns whether anything was redacted.
pub fn redact_args(args: &mut [Vec<u8>]) -> bool {
    let mut redacted = false;
    let mut value_is_secret = false;
    for arg in args.iter_mut() {
        if value_is_secret && !arg.starts_with(b"-") {
            *arg = REDACTED.to_vec();
            redacted = true;
            value_is_secret = false;
            continue;
        }
        value_is_secret = false;
        if let Some(eq) = arg.iter().position(|&b| b == b'=') {
            if is_secret_key(&arg[..eq]) {
                arg.truncate(eq + 1);
                arg.extend_from_slice(REDACTED);
                redacted = true;
                continue;
            }
        } else if arg.starts_with(b"-") && is_secret_key(arg) {
            // `--password hunter2`: the next argument is the secret.
            value_is_secret = true;
        }
        if let Some(clean) = redact_url_userinfo(arg) {
            *arg = clean;
            redacted = true;
        }
    }
    redacted
}

fn is_secret_key(key: &[u8]) -> bool {
    let key = String::from_utf8_lossy(key).to_ascii_lowercase();
    SECRET_WORDS.iter().any(|w| key.contains(w))
}

/// `postgres://app:hunter2@db:5432/x` → `postgres://<redacted>@db:5432/x`, anywhere in the argument.
fn redact_url_userinfo(arg: &[u8]) -> Option<Vec<u8>> {
    let scheme_end = find(arg, b"://")? + 3;
    let rest = &arg[scheme_end..];
    let authority_end =
        rest.iter().position(|&b| b == b'/' || b == b'?' || b == b'#' || b == b' ').unwrap_or(rest.len());
    let at = rest[..authority_end].iter().rposition(|&b| b == b'@')?;
    let mut out = arg[..scheme_end].to_vec();
    out.extend_from_slice(REDACTED);
    out.extend_from_slice(&rest[at..]);
    // Further URLs in the same argument.
    let tail_start = out.len() - (rest.len() - at);
    if let Some(tail) = redact_url_userinfo(&out[tail_start..]) {
        out.truncate(tail_start);
        out.extend_from_slice(&tail);
    }
    Some(out)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
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
    }

    #[test]
    fn ordinary_arguments_are_kept() {
        let (out, r) = run(&["nginx", "-g", "daemon off;", "http://example.com/path@x", "--authority-file", "a.pem"]);
        assert!(!r);
        assert_eq!(out, ["nginx", "-g", "daemon off;", "http://example.com/path@x", "--authority-file", "a.pem"]);
    }
}
