//! Command-line redaction. The environment is never read; arguments that look like
//! credentials are replaced, so a diagnosis can be pasted into a ticket.
//!
//! The arguments are read as one sequence of words (an argument may hold a whole
//! shell command), and each command in it by its program ([`PROGRAMS`]): argv[0],
//! the word after `sh -c`, the command a wrapper runs (`sudo -u root …`, `env A=b …`,
//! `exec`, `timeout 10 …`, `sshpass -p … ssh host …`), any program after `;`, `&&`,
//! `|` or a new line outside quotes in the argument after `sh -c`, and a known program
//! after those elsewhere (`mysql -e "select 1; select 2"` is one command), after `--`
//! and `$(`. Redacted:
//!
//! - the secret flags of programs: `mysql -pS`, `sshpass -p S`, `redis-cli -a S`,
//!   `curl -u user:S`, `keytool -storepass S` (and `-keypass`, `-srcstorepass`,
//!   `-deststorepass`…), `openssl -passin pass:S` (and `-passout`; `env:`, `file:`
//!   name no secret), `mongo -p S`, `ldapsearch -w S`, `zip -P S`, `7z -pS`; sqlplus'
//!   `user/S@db`; `aws configure set aws_secret_access_key S`;
//! - by secret-looking keys ([`SECRET_WORDS`], [`SECRET_KEYS`]): the value of
//!   `key=value`, in every piece of a word between `,` `;` `&` `?` (option lists, query
//!   strings, where [`QUERY_KEYS`] such as `sig` count too) and after a key that is
//!   itself a value (`--from-literal=password=S`); the word after such a `--flag`; the
//!   value of such a header, `X-Api-Key: S` or glued `X-Api-Key:S`;
//! - the word after `Bearer`/`Basic`/`Token`/`Digest` and after `Authorization:`
//!   (glued too: `Authorization:Bearer S`);
//! - the user-info of every URL (`scheme://user:pass@host`, also `user:pa/ss@host`)
//!   and of Go DSNs (`user:pass@tcp(host)`);
//! - tokens by their shape anywhere in a word: JWTs (`eyJ…` and two more dotted
//!   base64url parts) and [`TOKEN_SHAPES`]: AWS access key ids (`AKIA…`, `ASIA…`),
//!   GitHub, GitLab, Slack and Stripe tokens, whose prefix is kept.
//!
//! Left: a secret quoted across words (`--password 'two words'` keeps `words'`), and
//! a URL password of digits before its `/` when no path follows the host
//! (`u:1234/5@host` reads as `host:1234/path@x`). Linear in the input.

pub const REDACTED: &[u8] = b"<redacted>";

/// Words that mark a key (`--db-password=…`, `API_TOKEN=…`, `X-Api-Key:`) as secret.
const SECRET_WORDS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
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
    "subscription-key",
    "credential",
    "authorization",
];

/// Keys secret by their whole name, leading `-` aside: `--pass`, `MYSQL_PWD=`.
const SECRET_KEYS: &[&str] = &["pass", "pwd", "mysql_pwd", "rediscli_auth"];

/// Query parameters that are secret (`?sig=…`, `&key=…`) though as keys elsewhere
/// they are not (`--key=/etc/tls.key`).
const QUERY_KEYS: &[&str] = &["sig", "signature", "x-amz-signature", "x-goog-signature", "key", "auth"];

const AUTH_SCHEMES: &[&[u8]] = &[b"bearer", b"basic", b"token", b"digest"];

/// Words after which a command still starts: `if mysql …`, `then mysql …`, `-- mysql …`.
const KEYWORDS: &[&[u8]] = &[b"!", b"{", b"if", b"then", b"else", b"elif", b"do", b"while", b"until", b"--"];

/// Tokens known by their shape, anywhere in a word.
const TOKEN_SHAPES: &[TokenShape] = &[
    shape("AKIA", 16, is_upper_alnum), // AWS access key id
    shape("ASIA", 16, is_upper_alnum), // AWS temporary access key id
    shape("ghp_", 30, is_base64url),   // GitHub
    shape("gho_", 30, is_base64url),
    shape("ghu_", 30, is_base64url),
    shape("ghs_", 30, is_base64url),
    shape("ghr_", 30, is_base64url),
    shape("github_pat_", 30, is_base64url),
    shape("glpat-", 20, is_base64url), // GitLab
    shape("xoxb-", 20, is_base64url),  // Slack
    shape("xoxp-", 20, is_base64url),
    shape("xoxa-", 20, is_base64url),
    shape("sk_live_", 20, is_base64url), // Stripe
    shape("rk_live_", 20, is_base64url),
];

/// Programs whose words are read their way: names (`*`: every name it begins), the
/// flags that carry a secret, and what their other words are.
const PROGRAMS: &[Program] = &[
    program(&["mysql*", "mariadb*"], &[glued("-p")], Args::Plain),
    program(&["mongo*"], &[either("-p")], Args::Plain),
    program(&["redis-cli", "valkey-cli", "keydb-cli"], &[next("-a")], Args::Plain),
    program(&["ldap*"], &[either("-w")], Args::Plain),
    program(&["zip", "unzip"], &[next("-P")], Args::Plain),
    program(&["7z", "7za", "7zr"], &[glued("-p")], Args::Plain),
    program(
        &["curl"],
        &[
            either("-u").part(Part::AfterColon),
            next("--user").part(Part::AfterColon),
            either("-U").part(Part::AfterColon),
            next("--proxy-user").part(Part::AfterColon),
        ],
        Args::Plain,
    ),
    program(
        &["keytool", "jarsigner"],
        &[
            next("-storepass"),
            next("-keypass"),
            next("-srcstorepass"),
            next("-deststorepass"),
            next("-srckeypass"),
            next("-destkeypass"),
            next("-new"),
        ],
        Args::Plain,
    ),
    program(
        &["openssl"],
        &[
            next("-passin").part(Part::Pass),
            next("-passout").part(Part::Pass),
            next("-pass").part(Part::Pass),
            next("-k"),
        ],
        Args::Plain,
    ),
    program(&["sqlplus", "expdp", "impdp", "sqlldr"], &[], Args::Logon),
    program(&["aws"], &[], Args::AwsConfigure),
    program(&["sh", "bash", "dash", "ash", "zsh", "ksh", "mksh", "su"], &[], Args::Shell),
    // Wrappers: what follows their options (taking a value) and `skip` words is a command.
    program(&["sshpass"], &[either("-p")], command(&["-f", "-d", "-P"], 0)),
    program(
        &["ssh"],
        &[],
        command(
            &[
                "-B", "-b", "-c", "-D", "-E", "-e", "-F", "-I", "-i", "-J", "-L", "-l", "-m", "-O", "-o", "-p", "-Q",
                "-R", "-S", "-W", "-w",
            ],
            1,
        ),
    ),
    program(&["sudo"], &[], command(&["-u", "-g", "-h", "-p", "-C", "-D", "-r", "-t", "-U", "-T", "-R"], 0)),
    program(&["doas", "runuser"], &[], command(&["-u", "-g", "-G", "-C"], 0)),
    program(&["env"], &[], command(&["-u", "-C", "--unset", "--chdir"], 0)),
    program(&["exec"], &[], command(&["-a"], 0)),
    program(&["nice", "ionice"], &[], command(&["-n", "-c", "--adjustment", "--class", "--classdata"], 0)),
    program(&["stdbuf"], &[], command(&["-i", "-o", "-e"], 0)),
    program(&["timeout"], &[], command(&["-s", "-k", "--signal", "--kill-after"], 1)),
    program(&["chroot", "gosu", "su-exec"], &[], command(&[], 1)),
    program(&["xargs"], &[], command(&["-a", "-d", "-E", "-I", "-L", "-n", "-P", "-s"], 0)),
    program(&["watch"], &[], command(&["-n", "--interval"], 0)),
    program(&["nohup", "setsid", "time", "command", "busybox", "tini", "dumb-init", "catatonit"], &[], command(&[], 0)),
];

/// A prefix (kept), then at least `min` characters that `body` takes (redacted).
struct TokenShape {
    prefix: &'static str,
    min: usize,
    body: fn(&u8) -> bool,
}

const fn shape(prefix: &'static str, min: usize, body: fn(&u8) -> bool) -> TokenShape {
    TokenShape { prefix, min, body }
}

struct Program {
    names: &'static [&'static str],
    flags: &'static [Flag],
    args: Args,
}

/// A flag whose value is (or holds, see [`Part`]) a secret: in the next word
/// (`-a S`), glued on (`-pS`), or either; a long one also as `--flag=S`.
#[derive(Debug, Clone, Copy)]
struct Flag {
    name: &'static str,
    next: bool,
    glued: bool,
    part: Part,
}

/// What of a flag's value is secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Whole,
    /// The password of `user:password`.
    AfterColon,
    /// openssl's `pass:password`; `env:VAR`, `file:PATH`, `fd:N` name no secret.
    Pass,
}

/// What a program's words other than its secret flags are.
#[derive(Debug, Clone, Copy)]
enum Args {
    Plain,
    /// A shell: `-c` (`-ec`, `-lc`…) makes the next word a command.
    Shell,
    /// A wrapper: a command after the options (`value_flags` take the next word) and
    /// `skip` more words (`timeout 10 cmd`, `ssh host cmd`); assignments aside.
    Command {
        value_flags: &'static [&'static str],
        skip: usize,
    },
    /// An Oracle logon, `user/password@db`, as the first word with a `/`.
    Logon,
    /// `aws configure set KEY VALUE`: the value of a secret key.
    AwsConfigure,
}

const fn program(names: &'static [&'static str], flags: &'static [Flag], args: Args) -> Program {
    Program { names, flags, args }
}

const fn command(value_flags: &'static [&'static str], skip: usize) -> Args {
    Args::Command { value_flags, skip }
}

const fn next(name: &'static str) -> Flag {
    Flag { name, next: true, glued: false, part: Part::Whole }
}

const fn glued(name: &'static str) -> Flag {
    Flag { name, next: false, glued: true, part: Part::Whole }
}

const fn either(name: &'static str) -> Flag {
    Flag { name, next: true, glued: true, part: Part::Whole }
}

impl Flag {
    const fn part(self, part: Part) -> Flag {
        Flag { part, ..self }
    }

    /// Where the value glued to this flag starts in `word`: `-pS`, `--user=u:p`.
    fn glued_value(&self, word: &[u8]) -> Option<usize> {
        let name = self.name.as_bytes();
        let rest = word.strip_prefix(name).filter(|rest| !rest.is_empty())?;
        match name.len() {
            2 => self.glued.then_some(2),
            _ => (rest[0] == b'=').then_some(name.len() + 1),
        }
    }
}

impl Part {
    /// Where the secret starts in a flag's value (it runs to the word's end).
    fn start(self, value: &[u8]) -> Option<usize> {
        let start = match self {
            Part::Whole => 0,
            Part::AfterColon => value.iter().position(|&b| b == b':')? + 1,
            Part::Pass => value.starts_with(b"pass:").then_some(5)?,
        };
        (start < value.len()).then_some(start)
    }
}

/// A byte range of a word or an argument.
type Range = (usize, usize);

/// Redacts in place; returns whether anything was redacted.
pub fn redact_args(args: &mut [Vec<u8>]) -> bool {
    let mut scan = Scan { next: Next::Command, ..Scan::default() };
    let mut redacted = false;
    for arg in args.iter_mut() {
        let ranges = scan.argument(arg);
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
    /// After `--password`, `--token`, `Bearer`, `X-Api-Key:`: the secret, unless it
    /// reads as the next flag (`--token --verbose`).
    Value,
    /// After `Authorization:`: one optional scheme, then the secret.
    Scheme,
    /// After a program's secret flag (`sshpass -p`): its value, whatever it spells.
    Flag(Part),
}

/// Whether the next word names a program.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Next {
    #[default]
    Argument,
    /// It does: argv[0], after `sh -c`, a wrapper's command, a shell's `;`.
    Command,
    /// It may: after `;`, `&&`, `|` that may be quoted, `--`, `$(`; only a known
    /// program takes over there.
    MaybeCommand,
}

/// The state of the reading, carried across words and arguments.
#[derive(Default)]
struct Scan {
    pending: Pending,
    next: Next,
    /// The known program of the current command.
    program: Option<&'static Program>,
    /// How far into its arguments the program is (wrappers, sqlplus, aws).
    step: usize,
    /// The next word is the value of a wrapper's option (`sudo -u root`).
    skip_value: bool,
    /// A shell's `-c` was read: an argument that starts a command is a shell's.
    after_c: bool,
    /// This argument is a shell command (`sh -c 'a; b'`), and the quote open in it.
    shell: bool,
    quote: Option<u8>,
}

impl Scan {
    /// Byte ranges of `arg` that hold secrets, sorted and merged.
    fn argument(&mut self, arg: &[u8]) -> Vec<Range> {
        (self.shell, self.quote) = (self.next == Next::Command && std::mem::take(&mut self.after_c), None);
        let (mut ranges, mut found) = (Vec::new(), Vec::new());
        let mut end = 0;
        for (start, word) in split_keep_offsets(arg, |b| b.is_ascii_whitespace()) {
            if arg[end..start].contains(&b'\n') {
                self.separator();
            }
            end = start + word.len();
            self.word(word, &mut found);
            ranges.extend(found.drain(..).map(|(a, b)| (start + a, start + b)));
        }
        merge(ranges)
    }

    fn word(&mut self, word: &[u8], out: &mut Vec<Range>) {
        let (at, core, opens) = shell_core(word);
        if !self.value(word, core, at, out) {
            if opens || core == b"--" {
                self.maybe_command();
            }
            let taken = self.next != Next::Argument && self.command_word(core);
            if taken || !self.program_word(word, core, at, out) {
                self.generic(word, core, at, out);
            }
        }
        self.track_quotes(word);
        if matches!(word.last(), Some(b';' | b'&' | b'|')) {
            self.separator();
        }
    }

    fn track_quotes(&mut self, word: &[u8]) {
        for &b in word {
            self.quote = match self.quote {
                None if b == b'\'' || b == b'"' => Some(b),
                Some(q) if b == q => None,
                quote => quote,
            };
        }
    }

    /// `;`, `&&`, `|`, a new line: a command follows, surely where a shell reads them.
    fn separator(&mut self) {
        if self.shell && self.quote.is_none() {
            self.next = Next::Command;
        } else {
            self.maybe_command();
        }
    }

    fn maybe_command(&mut self) {
        if self.next == Next::Argument {
            self.next = Next::MaybeCommand;
        }
    }

    /// The word a pending flag or header asked for; true when it was that.
    fn value(&mut self, word: &[u8], core: &[u8], at: usize, out: &mut Vec<Range>) -> bool {
        match std::mem::take(&mut self.pending) {
            Pending::None => false,
            // `Authorization: Bearer x`: the scheme is kept, the credential after it is not.
            Pending::Scheme if is_scheme(&core.to_ascii_lowercase()) => {
                self.pending = Pending::Value;
                true
            }
            Pending::Scheme | Pending::Value if core.starts_with(b"-") => false,
            // Whatever it spells, `token` too (found by fuzzing: an auth scheme's name
            // was taken as a scheme there).
            Pending::Scheme | Pending::Value => {
                out.push((0, word.len()));
                true
            }
            Pending::Flag(part) => {
                out.extend(part.start(core).map(|s| (at + s, word.len())));
                true
            }
        }
    }

    /// A word where a command may start. Keywords and assignments (`A=b cmd`) leave it
    /// there; a known program takes over, and where a command surely starts, any
    /// program. Returns false for a word that is the current program's argument.
    fn command_word(&mut self, core: &[u8]) -> bool {
        if core.is_empty() || KEYWORDS.contains(&core) || is_assignment(core) {
            return true;
        }
        let known = find_program(core.rsplit(|&b| b == b'/').next().unwrap_or(core));
        if known.is_none() && self.next == Next::MaybeCommand {
            self.next = Next::Argument;
            return false;
        }
        (self.program, self.step, self.skip_value, self.next) = (known, 0, false, Next::Argument);
        true
    }

    /// A word of a known program's arguments; true when it is dealt with.
    fn program_word(&mut self, word: &[u8], core: &[u8], at: usize, out: &mut Vec<Range>) -> bool {
        let Some(program) = self.program else { return false };
        for flag in program.flags {
            if flag.next && core == flag.name.as_bytes() {
                self.pending = Pending::Flag(flag.part);
                return true;
            }
            if let Some(v) = flag.glued_value(core) {
                out.extend(flag.part.start(&core[v..]).map(|s| (at + v + s, word.len())));
                return true;
            }
        }
        let positional = !core.starts_with(b"-");
        match program.args {
            Args::Plain => false,
            Args::Shell => {
                if is_c_option(core) {
                    (self.next, self.after_c) = (Next::Command, true);
                }
                false
            }
            Args::Command { value_flags, skip } => {
                self.wrapper_word(core, value_flags, skip);
                false
            }
            Args::Logon if positional && self.step == 0 => self.logon(word, core, at, out),
            Args::AwsConfigure if positional => self.aws_configure(core),
            Args::Logon | Args::AwsConfigure => false,
        }
    }

    /// A wrapper's word: an option, its value, an assignment (`env A=b`), one of the
    /// `skip` words before the command (`timeout 10`), or the command's program.
    fn wrapper_word(&mut self, core: &[u8], value_flags: &[&str], skip: usize) {
        if std::mem::take(&mut self.skip_value) || is_assignment(core) {
            return;
        }
        if core.starts_with(b"-") {
            self.skip_value = value_flags.iter().any(|f| f.as_bytes() == core);
        } else if self.step < skip {
            self.step += 1;
        } else {
            self.next = Next::Command;
            self.command_word(core);
        }
    }

    /// sqlplus' first word with a `/`, `user/password@db`; `@script.sql` ends the search.
    fn logon(&mut self, word: &[u8], core: &[u8], at: usize, out: &mut Vec<Range>) -> bool {
        if core.starts_with(b"@") {
            self.step = 1;
            return false;
        }
        let Some((a, b)) = logon_password(core) else { return false };
        out.push((at + a, if b == core.len() { word.len() } else { at + b }));
        self.step = 1;
        true
    }

    /// `aws [options] configure set KEY VALUE`: steps 1 after `configure`, 2 after `set`.
    fn aws_configure(&mut self, core: &[u8]) -> bool {
        match (self.step, core) {
            (0, b"configure") => self.step = 1,
            (1, b"set") => self.step = 2,
            (1, _) => self.step = 3,
            (2, key) if is_secret_key(key) => {
                self.pending = Pending::Flag(Part::Whole);
                return true;
            }
            _ => {}
        }
        false
    }

    /// What any program's word may hold: secret flags, headers, keys, URLs, tokens.
    fn generic(&mut self, word: &[u8], core: &[u8], at: usize, out: &mut Vec<Range>) {
        let lower = core.to_ascii_lowercase();
        if is_scheme(&lower) {
            self.pending = Pending::Value;
        } else if let Some(name) = lower.strip_suffix(b":")
            && is_secret_key(name)
        {
            // `X-Api-Key: S`; `Authorization: Bearer S`.
            let authorization = find(name, b"authorization").is_some();
            self.pending = if authorization { Pending::Scheme } else { Pending::Value };
        } else if core.starts_with(b"-") && !core.contains(&b'=') && is_secret_key(core) {
            self.pending = Pending::Value;
        } else if !self.glued_header(word, &lower, at, out) {
            key_value_ranges(word, out);
            userinfo_ranges(word, out);
            dsn_ranges(word, out);
            jwt_ranges(word, out);
            token_shape_ranges(word, out);
        }
    }

    /// `X-Api-Key:S`, `--header=PRIVATE-TOKEN:S`, `Authorization:Bearer S`: a header
    /// whose name ends in a secret word, its value glued on (a path is none:
    /// `-v db-secret:/etc/secret`).
    fn glued_header(&mut self, word: &[u8], lower: &[u8], at: usize, out: &mut Vec<Range>) -> bool {
        let Some(colon) = lower.iter().position(|&b| b == b':') else { return false };
        let name = &lower[lower[..colon].iter().rposition(|&b| b == b'=').map_or(0, |p| p + 1)..colon];
        let value = &lower[colon + 1..];
        let header = !name.is_empty() && name.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        let secret = SECRET_WORDS.iter().any(|w| name.ends_with(w.as_bytes()));
        if !header || !secret || value.is_empty() || value.starts_with(b"/") {
            return false;
        }
        if is_scheme(value) && find(name, b"authorization").is_some() {
            self.pending = Pending::Value;
        } else {
            out.push((at + colon + 1, word.len()));
        }
        true
    }
}

fn find_program(name: &[u8]) -> Option<&'static Program> {
    PROGRAMS.iter().find(|p| {
        p.names.iter().any(|n| match n.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix.as_bytes()),
            None => name == n.as_bytes(),
        })
    })
}

/// A word without the shell's quotes and brackets around it: where that starts, the
/// rest, and whether it opens a command (`$(cmd`, `` `cmd ``, `(cmd`).
fn shell_core(word: &[u8]) -> (usize, &[u8], bool) {
    let (mut at, mut opens) = (0, false);
    while at < word.len() {
        match word[at] {
            b'\'' | b'"' => at += 1,
            b'(' | b'`' => (at, opens) = (at + 1, true),
            b'$' if word.get(at + 1) == Some(&b'(') => (at, opens) = (at + 2, true),
            _ => break,
        }
    }
    let end = word.len() - word[at..].iter().rev().take_while(|b| b"'\"`);&|".contains(b)).count();
    (at, &word[at..end], opens)
}

/// `NAME=value`, as before a command or after `env`.
fn is_assignment(word: &[u8]) -> bool {
    let name = word.iter().position(|&b| b == b'=').map_or(&[][..], |eq| &word[..eq]);
    name.first().is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_')
        && name.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A shell's `-c`, alone or among other short options (`-ec`, `-lc`).
fn is_c_option(word: &[u8]) -> bool {
    word.len() >= 2 && word[0] == b'-' && word[1..].iter().all(u8::is_ascii_alphabetic) && word.contains(&b'c')
}

fn is_scheme(lower: &[u8]) -> bool {
    AUTH_SCHEMES.contains(&lower)
}

fn is_secret_key(key: &[u8]) -> bool {
    let key = String::from_utf8_lossy(key).to_ascii_lowercase();
    let bare = key.trim_start_matches(['-', '\'', '"']);
    SECRET_WORDS.iter().any(|w| key.contains(w)) || SECRET_KEYS.contains(&bare)
}

fn is_query_key(key: &[u8]) -> bool {
    QUERY_KEYS.iter().any(|k| key.eq_ignore_ascii_case(k.as_bytes()))
}

fn is_base64url(b: &u8) -> bool {
    b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_'
}

fn is_upper_alnum(b: &u8) -> bool {
    b.is_ascii_uppercase() || b.is_ascii_digit()
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

/// The password of an Oracle logon `user/password@db` (`/nolog`, `user@db`: none).
fn logon_password(word: &[u8]) -> Option<Range> {
    let slash = word.iter().position(|&b| b == b'/' || b == b'@').filter(|&p| p > 0 && word[p] == b'/')?;
    let password = &word[slash + 1..];
    let len = match password.strip_prefix(b"\"") {
        Some(quoted) => quoted.iter().position(|&b| b == b'"').map_or(password.len(), |p| p + 2),
        None => password.iter().position(|&b| b == b'@').unwrap_or(password.len()),
    };
    (len > 0).then_some((slash + 1, slash + 1 + len))
}

/// The value of every `key=value` piece whose key is secret; a key may follow
/// another (`--from-literal=password=S`), and in a query string [`QUERY_KEYS`] count.
fn key_value_ranges(word: &[u8], out: &mut Vec<Range>) {
    for (p, piece) in split_keep_offsets(word, |b| matches!(b, b',' | b';' | b'&' | b'?')) {
        let query = p > 0 && matches!(word[p - 1], b'?' | b'&');
        let mut key_start = 0;
        for eq in piece.iter().enumerate().filter_map(|(i, &b)| (b == b'=').then_some(i)) {
            let key = &piece[key_start..eq];
            if is_secret_key(key) || (query && key_start == 0 && is_query_key(key)) {
                if eq + 1 < piece.len() {
                    out.push((p + eq + 1, p + piece.len()));
                }
                break;
            }
            key_start = eq + 1;
        }
    }
}

/// The user-info of every `scheme://user:pass@host` in a word.
fn userinfo_ranges(word: &[u8], out: &mut Vec<Range>) {
    let mut i = 0;
    while let Some(found) = find(&word[i..], b"://") {
        let begin = i + found + 3;
        let rest = &word[begin..];
        let host_len = rest.iter().position(|&b| matches!(b, b'/' | b'?' | b'#' | b',' | b';')).unwrap_or(rest.len());
        let (end, read) = match rest[..host_len].iter().rposition(|&b| b == b'@') {
            Some(at) => (Some(at), host_len),
            None => slashed_userinfo(rest, host_len),
        };
        out.extend(end.map(|end| (begin, begin + end)));
        i = begin + read;
    }
}

/// `user:pa/ss@host`: a password with a `/`. `rest` follows `://`, and before
/// `host_len` holds no `@`. Returns where the user-info ends, if it is one, and how
/// far `rest` was read. Not one: `host:8080/path@x` (a port, and no path after the
/// `@`), `host/@scope`.
fn slashed_userinfo(rest: &[u8], host_len: usize) -> (Option<usize>, usize) {
    let Some(colon) = rest[..host_len].iter().rposition(|&b| b == b':') else { return (None, host_len) };
    if rest.get(host_len) != Some(&b'/') {
        return (None, host_len);
    }
    let stop = |b: &u8| matches!(b, b'?' | b'#' | b',' | b';');
    let at = rest[host_len..].iter().position(|b| *b == b'@' || stop(b)).map_or(rest.len(), |p| host_len + p);
    if rest.get(at) != Some(&b'@') || rest[at - 1] == b'/' {
        return (None, at);
    }
    let host_end = rest[at..].iter().position(|b| *b == b'/' || stop(b)).map_or(rest.len(), |p| at + p);
    let port = &rest[colon + 1..host_len];
    if (port.iter().all(u8::is_ascii_digit) || port.contains(&b']')) && rest.get(host_end) != Some(&b'/') {
        return (None, host_end);
    }
    let last_at = rest[at..host_end].iter().rposition(|&b| b == b'@').map_or(at, |p| at + p);
    (Some(last_at), host_end)
}

/// The password of Go DSNs, `user:pass@tcp(host)/db` and `@unix(`.
fn dsn_ranges(word: &[u8], out: &mut Vec<Range>) {
    let mut colon = None;
    for (i, &b) in word.iter().enumerate() {
        match b {
            b'=' | b',' | b';' | b'/' => colon = None,
            b':' if colon.is_none() => colon = Some(i),
            b'@' if word[i..].starts_with(b"@tcp(") || word[i..].starts_with(b"@unix(") => {
                out.extend(colon.map(|c| (c + 1, i)));
            }
            _ => {}
        }
    }
}

/// JSON Web Tokens: `eyJ` (a JSON object's `{"`) and 7 more base64url characters, then
/// two more dotted parts.
fn jwt_ranges(word: &[u8], out: &mut Vec<Range>) {
    let run = |from: usize| word[from..].iter().take_while(|b| is_base64url(b)).count();
    let part = |dot: usize| (word.get(dot) == Some(&b'.')).then(|| run(dot + 1)).filter(|&n| n > 0);
    let mut i = 0;
    while let Some(p) = find(&word[i..], b"eyJ") {
        let start = i + p;
        let header_end = start + run(start);
        let end = part(header_end).and_then(|n| part(header_end + 1 + n).map(|m| header_end + n + m + 2));
        match end {
            Some(end) if header_end - start >= 10 => {
                out.push((start, end));
                i = end;
            }
            // An `eyJ` later in this part ends at the same place: no token either.
            _ => i = header_end,
        }
    }
}

/// Tokens of [`TOKEN_SHAPES`] anywhere in a word: what follows the prefix.
fn token_shape_ranges(word: &[u8], out: &mut Vec<Range>) {
    if word.len() < 20 {
        return; // the shortest, `AKIA` and 16
    }
    for shape in TOKEN_SHAPES {
        let mut i = 0;
        while let Some(p) = find(&word[i..], shape.prefix.as_bytes()) {
            let start = i + p + shape.prefix.len();
            let len = word[start..].iter().take_while(|b| (shape.body)(b)).count();
            if len >= shape.min {
                out.push((start, start + len));
            }
            i = start + len;
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn merge(mut ranges: Vec<Range>) -> Vec<Range> {
    ranges.sort_unstable();
    let mut merged: Vec<Range> = Vec::with_capacity(ranges.len());
    for (a, b) in ranges {
        match merged.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    merged
}

fn replace(arg: &[u8], ranges: &[Range]) -> Vec<u8> {
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
        // Each scanner over what makes it look again: JWT starts, slashed URLs, token
        // prefixes, DSN markers, keys, headers, shell separators and words.
        for unit in
            ["eyJ", "eyJaaaaaaaaaa.b", "a://b:c/", "a://b:c/@", "AKIA", "ghp_", "@tcp(", "a=", "x:", "a; ", "-p "]
        {
            let hostile = unit.repeat(128 * 1024 / unit.len());
            let start = std::time::Instant::now();
            run(&["sh", "-c", &hostile]);
            run(&["mysql", &hostile]);
            assert!(start.elapsed() < std::time::Duration::from_secs(2), "{unit}: {:?}", start.elapsed());
        }
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

    /// Runs every case and names all that fail, not only the first.
    fn check(cases: &[(&[&str], &[&str])]) {
        let failed: Vec<String> = cases
            .iter()
            .filter_map(|&(args, want)| {
                let (out, _) = run(args);
                (out != want).then(|| format!("{args:?}\n    gave {out:?}\n    want {want:?}"))
            })
            .collect();
        assert!(failed.is_empty(), "{} of {} cases failed:\n{}", failed.len(), cases.len(), failed.join("\n"));
    }

    #[test]
    fn programs_own_secret_flags_are_redacted() {
        check(&[
            (&["sshpass", "-p", "hunter2", "ssh", "host"], &["sshpass", "-p", "<redacted>", "ssh", "host"]),
            (
                &["sshpass", "-phunter2", "ssh", "-p", "2222", "u@host"],
                &["sshpass", "-p<redacted>", "ssh", "-p", "2222", "u@host"],
            ),
            (
                &["redis-cli", "-h", "cache", "-a", "hunter2", "ping"],
                &["redis-cli", "-h", "cache", "-a", "<redacted>", "ping"],
            ),
            (&["curl", "-u", "user:hunter2", "https://h"], &["curl", "-u", "user:<redacted>", "https://h"]),
            (
                &["curl", "-uuser:hunter2", "--user=admin:hunter2", "--proxy-user", "p:hunter2", "https://h"],
                &["curl", "-uuser:<redacted>", "--user=admin:<redacted>", "--proxy-user", "p:<redacted>", "https://h"],
            ),
            (
                &["keytool", "-importkeystore", "-srcstorepass", "s1", "-deststorepass", "s2", "-keypass", "s3"],
                &[
                    "keytool",
                    "-importkeystore",
                    "-srcstorepass",
                    "<redacted>",
                    "-deststorepass",
                    "<redacted>",
                    "-keypass",
                    "<redacted>",
                ],
            ),
            (&["keytool", "-list", "-storepass", "hunter2"], &["keytool", "-list", "-storepass", "<redacted>"]),
            (
                &["openssl", "pkcs12", "-in", "a.p12", "-passin", "pass:hunter2", "-passout", "pass:hunter2"],
                &["openssl", "pkcs12", "-in", "a.p12", "-passin", "pass:<redacted>", "-passout", "pass:<redacted>"],
            ),
            (&["sqlplus", "scott/hunter2@orcl"], &["sqlplus", "scott/<redacted>@orcl"]),
            (
                &["sqlplus", "-s", "system/hunter2@//db:1521/svc", "@run.sql"],
                &["sqlplus", "-s", "system/<redacted>@//db:1521/svc", "@run.sql"],
            ),
            (&["sqlplus", "-L", "scott/hunter2"], &["sqlplus", "-L", "scott/<redacted>"]),
            (
                &["aws", "configure", "set", "aws_secret_access_key", "hunter2"],
                &["aws", "configure", "set", "aws_secret_access_key", "<redacted>"],
            ),
            (
                &[
                    "aws",
                    "--profile",
                    "p",
                    "configure",
                    "set",
                    "default.aws_session_token",
                    "hunter2",
                    "--profile",
                    "p",
                ],
                &[
                    "aws",
                    "--profile",
                    "p",
                    "configure",
                    "set",
                    "default.aws_session_token",
                    "<redacted>",
                    "--profile",
                    "p",
                ],
            ),
            (&["mongosh", "-u", "root", "-p", "hunter2"], &["mongosh", "-u", "root", "-p", "<redacted>"]),
            (
                &["ldapsearch", "-x", "-D", "cn=admin", "-w", "hunter2"],
                &["ldapsearch", "-x", "-D", "cn=admin", "-w", "<redacted>"],
            ),
            (&["zip", "-P", "hunter2", "out.zip", "f"], &["zip", "-P", "<redacted>", "out.zip", "f"]),
            (&["7z", "a", "-phunter2", "out.7z"], &["7z", "a", "-p<redacted>", "out.7z"]),
        ]);
    }

    #[test]
    fn what_names_no_secret_stays() {
        check(&[
            (&["curl", "-u", "user", "https://h"], &["curl", "-u", "user", "https://h"]),
            (
                &["openssl", "rsa", "-passin", "env:KEY_PASS", "-passout", "file:/run/pass"],
                &["openssl", "rsa", "-passin", "env:KEY_PASS", "-passout", "file:/run/pass"],
            ),
            (&["sqlplus", "/nolog"], &["sqlplus", "/nolog"]),
            (&["sqlplus", "scott@orcl", "@/tmp/a.sql"], &["sqlplus", "scott@orcl", "@/tmp/a.sql"]),
            (&["aws", "configure", "set", "region", "eu-west-1"], &["aws", "configure", "set", "region", "eu-west-1"]),
            (&["ssh", "-p", "2222", "host"], &["ssh", "-p", "2222", "host"]),
            (&["sh", "-c", "mysql -h db; grep -pattern f"], &["sh", "-c", "mysql -h db; grep -pattern f"]),
            (
                &["docker", "run", "-v", "db-secret:/etc/secret", "img"],
                &["docker", "run", "-v", "db-secret:/etc/secret", "img"],
            ),
            (&["app", "--image=sealed-secrets:v0.24"], &["app", "--image=sealed-secrets:v0.24"]),
            (&["mpv", "heyJude.mp3.bak"], &["mpv", "heyJude.mp3.bak"]),
            (&["app", "AKIA1234", "--key-file=/k.pem"], &["app", "AKIA1234", "--key-file=/k.pem"]),
            (&["curl", "http://host:8080/files/a@b"], &["curl", "http://host:8080/files/a@b"]),
            (
                &["npm", "view", "http://localhost:4873/@scope/pkg"],
                &["npm", "view", "http://localhost:4873/@scope/pkg"],
            ),
        ]);
    }

    #[test]
    fn secret_keys_and_headers_are_redacted() {
        check(&[
            (&["app", "--pass", "hunter2", "--pass=hunter2"], &["app", "--pass", "<redacted>", "--pass=<redacted>"]),
            (&["env", "MYSQL_PWD=hunter2", "mysql"], &["env", "MYSQL_PWD=<redacted>", "mysql"]),
            (&["env", "REDISCLI_AUTH=hunter2", "redis-cli"], &["env", "REDISCLI_AUTH=<redacted>", "redis-cli"]),
            (&["curl", "-H", "X-Api-Key: hunter2", "https://h"], &["curl", "-H", "X-Api-Key: <redacted>", "https://h"]),
            (&["curl", "-H", "X-Api-Key:", "hunter2"], &["curl", "-H", "X-Api-Key:", "<redacted>"]),
            (
                &["sh", "-c", "curl -H 'X-Api-Key: hunter2' https://h"],
                &["sh", "-c", "curl -H 'X-Api-Key: <redacted> https://h"],
            ),
            (&["curl", "--header", "PRIVATE-TOKEN: hunter2"], &["curl", "--header", "PRIVATE-TOKEN: <redacted>"]),
            (&["curl", "-H", "Authorization:Bearer hunter2"], &["curl", "-H", "Authorization:Bearer <redacted>"]),
            (
                &["curl", "-H", "X-Api-Key:hunter2", "--header=Authorization:hunter2"],
                &["curl", "-H", "X-Api-Key:<redacted>", "--header=Authorization:<redacted>"],
            ),
            (
                &["curl", "-H", "X-Api-Key:token", "-H", "X-Api-Key: token"],
                &["curl", "-H", "X-Api-Key:<redacted>", "-H", "X-Api-Key: <redacted>"],
            ),
            (&["curl", "https://h/p?sig=hunter2&x=1"], &["curl", "https://h/p?sig=<redacted>&x=1"]),
            (
                &["curl", "https://h/p?key=hunter2", "https://h/q?a=1&token=hunter2"],
                &["curl", "https://h/p?key=<redacted>", "https://h/q?a=1&token=<redacted>"],
            ),
            (
                &["kubectl", "create", "secret", "generic", "db", "--from-literal=password=hunter2"],
                &["kubectl", "create", "secret", "generic", "db", "--from-literal=password=<redacted>"],
            ),
        ]);
    }

    #[test]
    fn programs_are_found_in_shell_strings_and_after_wrappers() {
        check(&[
            (&["sh", "-c", "mysql -uroot -phunter2 db"], &["sh", "-c", "mysql -uroot -p<redacted> db"]),
            (&["bash", "-c", "sh -c 'mysql -phunter2'"], &["bash", "-c", "sh -c 'mysql -p<redacted>"]),
            (&["sudo", "-u", "root", "mysql", "-phunter2"], &["sudo", "-u", "root", "mysql", "-p<redacted>"]),
            (
                &["env", "LANG=C", "sshpass", "-p", "hunter2", "ssh", "host"],
                &["env", "LANG=C", "sshpass", "-p", "<redacted>", "ssh", "host"],
            ),
            (
                &["sh", "-c", "cd /app && exec redis-cli -a hunter2"],
                &["sh", "-c", "cd /app && exec redis-cli -a <redacted>"],
            ),
            (
                &["sh", "-c", "timeout 10 mysql -phunter2; echo done"],
                &["sh", "-c", "timeout 10 mysql -p<redacted> echo done"],
            ),
            (
                &["sh", "-c", "echo $(mysql -phunter2 -e 'select 1')"],
                &["sh", "-c", "echo $(mysql -p<redacted> -e 'select 1')"],
            ),
            (&["sh", "-c", "cd /app\nmysql -phunter2"], &["sh", "-c", "cd /app\nmysql -p<redacted>"]),
            (
                &["kubectl", "exec", "db", "--", "mysql", "-phunter2"],
                &["kubectl", "exec", "db", "--", "mysql", "-p<redacted>"],
            ),
            (&["ssh", "-i", "k", "host", "mysql -phunter2"], &["ssh", "-i", "k", "host", "mysql -p<redacted>"]),
            (
                &["/bin/sh", "-ec", "keytool -list -storepass hunter2"],
                &["/bin/sh", "-ec", "keytool -list -storepass <redacted>"],
            ),
            (&["sh", "-c", "sqlplus scott/hunter2@orcl <<EOF"], &["sh", "-c", "sqlplus scott/<redacted>@orcl <<EOF"]),
            // A `;` in an argument that is no shell command, or quoted in one, does not
            // end mysql's command; a known program after one still takes over.
            (
                &["mysql", "-e", "select 1; select 2", "-phunter2"],
                &["mysql", "-e", "select 1; select 2", "-p<redacted>"],
            ),
            (
                &["sh", "-c", "mysql -e 'select 1; select 2' -phunter2"],
                &["sh", "-c", "mysql -e 'select 1; select 2' -p<redacted>"],
            ),
            (&["bash", "-c", "sh -c 'cd /x; mysql -phunter2'"], &["bash", "-c", "sh -c 'cd /x; mysql -p<redacted>"]),
            (&["sh", "-c", "echo 'a; b'", "x", "-phunter2"], &["sh", "-c", "echo 'a; b'", "x", "-phunter2"]),
        ]);
    }

    #[test]
    fn tokens_are_redacted_by_their_shape() {
        check(&[
            (&["app", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"], &["app", "<redacted>"]),
            (&["app", "--auth=jwt:eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln-_x"], &["app", "--auth=jwt:<redacted>"]),
            (&["app", "AKIAIOSFODNN7EXAMPLE"], &["app", "AKIA<redacted>"]),
            (&["app", "--id=ASIAY34FZKBOKMUTVV7A,region=x"], &["app", "--id=ASIA<redacted>,region=x"]),
            (&["app", "--gh=ghp_abcdefghijklmnopqrstuvwxyz0123456789"], &["app", "--gh=ghp_<redacted>"]),
            (
                &["app", "glpat-abcdefghij0123456789", "xoxb-1234-5678-abcdefghijklmnop"],
                &["app", "glpat-<redacted>", "xoxb-<redacted>"],
            ),
        ]);
    }

    #[test]
    fn url_passwords_with_a_slash_are_redacted() {
        check(&[
            (&["psql", "postgres://u:pa/ss@host/db"], &["psql", "postgres://<redacted>@host/db"]),
            (
                &["app", "--dsn=mysql://root:a/b@c@db:3306/x?tls=1"],
                &["app", "--dsn=mysql://<redacted>@db:3306/x?tls=1"],
            ),
            (&["psql", "postgres://u:1234/5@host/db"], &["psql", "postgres://<redacted>@host/db"]),
        ]);
    }
}
