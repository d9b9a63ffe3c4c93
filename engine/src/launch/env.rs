//! The container's environment, by Apptainer's rules (`internal/pkg/util/env/create.go`,
//! `launcher_linux.go`):
//!
//! - Host variables pass through, except `APPTAINER_*`/`SINGULARITY_*`/`STRATA_*` (the
//!   runtime's own settings), `HOME`, `PATH`, `LD_LIBRARY_PATH` (host libraries rarely suit the
//!   image), and, with `-e/--cleanenv`, everything but `TERM` and the proxy variables
//!   (`http_proxy`, `https_proxy`, `no_proxy`, `all_proxy`, `ftp_proxy`, both cases); `LANG=C`
//!   is then set. `LD_PRELOAD` passes, as in Apptainer.
//! - `PATH` is `/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin` unless the image's
//!   environment scripts set one; `HOME` is the home directory inside the container.
//! - User values: `STRATAENV_K`, `APPTAINERENV_K`, `SINGULARITYENV_K` (in that precedence),
//!   overridden by `--env-file`, overridden by `--env K=V`. They win over the image's
//!   `%environment`. `HOME` cannot be set that way; `PATH`, `PREPEND_PATH` and `APPEND_PATH`
//!   become `SING_USER_DEFINED_*PATH`, applied after the image's scripts.
//! - Runtime variables scripts rely on: `APPTAINER_CONTAINER`, `APPTAINER_NAME`,
//!   `APPTAINER_COMMAND` (and `SINGULARITY_*`, `STRATA_*` twins), `APPTAINER_INSTANCE`,
//!   `APPTAINER_BIND`, `APPTAINER_SHELL`.
//!
//! Each variable has a [`VarKind`] that tells the action script what to do with it around the
//! image's `/.singularity.d/env/*.sh` scripts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::action::Action;
use super::binds::ContainerPath;

/// The `PATH` given to the container when its scripts set none (Apptainer's `DefaultPath`).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Host variables passed even with `--cleanenv`.
const ALWAYS_PASS: &[&str] = &[
    "TERM",
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "no_proxy",
    "NO_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "ftp_proxy",
    "FTP_PROXY",
];

/// Host variables never passed; `LD_LIBRARY_PATH` may still be set with `--env`.
const ALWAYS_OMIT: &[&str] = &[
    "HOME",
    "PATH",
    "LD_LIBRARY_PATH",
    "APPTAINER_SHELL",
    "APPTAINER_APPNAME",
    "SINGULARITY_SHELL",
    "SINGULARITY_APPNAME",
];

/// Names `--env` / `*ENV_` may not set (they belong to the runtime).
const NOT_OVERRIDABLE: &[&str] =
    &["HOME", "APPTAINER_SHELL", "APPTAINER_APPNAME", "SINGULARITY_SHELL", "SINGULARITY_APPNAME"];

/// Prefixes of the runtime's own settings: never forwarded into the container.
const RUNTIME_PREFIXES: &[&str] = &["APPTAINER_", "SINGULARITY_", "STRATA_"];

/// Prefixes of host variables that set a container variable, highest precedence first.
pub const CONTAINER_ENV_PREFIXES: &[&str] = &["STRATAENV_", "APPTAINERENV_", "SINGULARITYENV_"];

/// Shell-readonly names an environment file cannot set.
const READONLY: &[&str] = &["UID", "EUID", "GID", "PPID"];

/// What the action script does with a variable around the image's environment scripts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VarKind {
    /// From the host (or a default such as `PATH`): hidden while the image's scripts run, then
    /// restored if they did not set it.
    Host,
    /// From the user (`--env`, `--env-file`, `*ENV_`): hidden while the scripts run, set again
    /// after `99-base.sh` so that it wins over the image's `%environment`.
    User,
    /// Set by the runtime (`HOME`, `APPTAINER_*`): visible to the scripts, left alone.
    Runtime,
}

/// One variable of the container's environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvVar {
    pub value: String,
    pub kind: VarKind,
}

/// What the command line asked for.
#[derive(Clone, Debug)]
pub struct EnvOptions {
    /// `-e/--cleanenv` (also implied by `--containall`).
    pub cleanenv: bool,
    /// `--env` values, each possibly a comma-separated list.
    pub env: Vec<String>,
    /// `--env-file` files, in order.
    pub env_files: Vec<PathBuf>,
    /// `$HOME` inside the container.
    pub home: ContainerPath,
    /// The canonical image path (`APPTAINER_CONTAINER`); the instance's image when joining.
    pub image: PathBuf,
    pub action: Action,
    /// The instance name, for `instance start` and `instance://` joins.
    pub instance: Option<String>,
    /// The user's bind specifications as given (`APPTAINER_BIND`).
    pub binds: Vec<String>,
    /// `--shell` (the `shell` action's program).
    pub shell: Option<String>,
}

/// Why the environment could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error("--env {0:?}: must be formatted as NAME=value")]
    Format(String),
    #[error(
        "invalid environment variable name {name:?} (from {origin}): use letters, digits and _, \
         not starting with a digit"
    )]
    Name { name: String, origin: String },
    #[error("could not read environment file {path:?}: {source}")]
    FileRead { path: PathBuf, source: std::io::Error },
    #[error("{path}:{line}: {problem}")]
    FileSyntax { path: String, line: usize, problem: String },
}

/// The container's environment: unique names, each with its kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerEnv {
    vars: BTreeMap<String, EnvVar>,
}

/// A shell variable name: letters, digits and `_`, not starting with a digit.
pub fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// The host environment as UTF-8 pairs; variables that are not UTF-8 are left out.
pub fn host_env() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| match (k.into_string(), v.into_string()) {
            (Ok(k), Ok(v)) => Some((k, v)),
            (k, _) => {
                crate::verbose!(
                    "Not forwarding environment variable {}: not valid UTF-8",
                    k.unwrap_or_else(|k| k.to_string_lossy().into_owned())
                );
                None
            }
        })
        .collect()
}

/// Parse one `--env` value: `A=1,B=2`. A segment without `=` continues the previous value
/// (`--env PATH=/a,/b` sets PATH to `/a,/b`).
pub fn parse_env_arg(arg: &str) -> Result<Vec<(String, String)>, EnvError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for segment in arg.split(',') {
        match segment.split_once('=') {
            Some((name, value)) if is_name(name.trim()) => {
                out.push((name.trim().to_string(), value.to_string()));
            }
            Some((name, _)) if !name.trim().is_empty() && out.is_empty() => {
                return Err(EnvError::Name {
                    name: name.trim().to_string(),
                    origin: format!("--env {arg:?}"),
                })
            }
            _ => match out.last_mut() {
                Some((_, value)) => {
                    value.push(',');
                    value.push_str(segment);
                }
                None => return Err(EnvError::Format(arg.to_string())),
            },
        }
    }
    Ok(out)
}

/// Parse an environment file the way a shell would assign it, without running anything:
/// `NAME=value` statements (optionally after `export`), separated by newlines or `;`; `#`
/// comments; single quotes, double quotes, backslash escapes; `$NAME`, `${NAME}` and
/// `${NAME:-default}` expand from earlier assignments, then from `lookup` (the host
/// environment). Command substitution is refused.
pub fn parse_env_file(
    content: &str,
    origin: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>, EnvError> {
    EnvFileParser { chars: content.chars().collect(), pos: 0, line: 1, origin, lookup, assigned: Vec::new() }
        .parse()
}

struct EnvFileParser<'a> {
    chars: Vec<char>,
    pos: usize,
    line: usize,
    origin: &'a str,
    lookup: &'a dyn Fn(&str) -> Option<String>,
    assigned: Vec<(String, String)>,
}

impl EnvFileParser<'_> {
    fn err(&self, problem: impl Into<String>) -> EnvError {
        EnvError::FileSyntax { path: self.origin.to_string(), line: self.line, problem: problem.into() }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }

    fn value_of(&self, name: &str) -> Option<String> {
        self.assigned
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .or_else(|| (self.lookup)(name))
    }

    fn parse(mut self) -> Result<Vec<(String, String)>, EnvError> {
        // Inside an `export ...` statement, bare names are accepted (and ignored).
        let mut exporting = false;
        loop {
            // Skip blanks, statement separators and comments.
            match self.peek() {
                None => break,
                Some('\n' | ';') => {
                    exporting = false;
                    self.bump();
                    continue;
                }
                Some(' ' | '\t' | '\r') => {
                    self.bump();
                    continue;
                }
                Some('#') => {
                    while !matches!(self.peek(), None | Some('\n')) {
                        self.bump();
                    }
                    continue;
                }
                Some(_) => {}
            }
            let word_line = self.line;
            let word = self.word()?;
            let (name, value) = match word {
                Word::Assign(name, value) => (name, value),
                Word::Plain(w) if w == "export" => {
                    exporting = true;
                    continue;
                }
                Word::Plain(w) => {
                    // `export NAME` of a name: nothing to do.
                    if is_name(&w) && exporting {
                        continue;
                    }
                    self.line = word_line;
                    return Err(self.err(format!(
                        "{w:?} is not a NAME=value assignment (environment files are not run, \
                         only their assignments are read)"
                    )));
                }
            };
            if READONLY.contains(&name.as_str()) {
                continue;
            }
            self.assigned.push((name, value));
        }
        Ok(self.assigned)
    }

    /// One shell word; an assignment if it starts with `NAME=` unquoted.
    fn word(&mut self) -> Result<Word, EnvError> {
        let start = self.pos;
        while matches!(self.peek(), Some(c) if c == '_' || c.is_ascii_alphanumeric()) {
            self.bump();
        }
        let name: String = self.chars[start..self.pos].iter().collect();
        let assign = self.peek() == Some('=') && is_name(&name);
        if assign {
            self.bump();
        } else {
            self.pos = start;
        }
        let mut value = String::new();
        loop {
            match self.peek() {
                None | Some(' ' | '\t' | '\n' | '\r' | ';') => break,
                Some('\'') => {
                    self.bump();
                    loop {
                        match self.bump() {
                            None => return Err(self.err("unterminated single quote")),
                            Some('\'') => break,
                            Some(c) => value.push(c),
                        }
                    }
                }
                Some('"') => {
                    self.bump();
                    loop {
                        match self.bump() {
                            None => return Err(self.err("unterminated double quote")),
                            Some('"') => break,
                            Some('\\') => match self.bump() {
                                Some('\n') => {}
                                Some(c @ ('"' | '\\' | '$' | '`')) => value.push(c),
                                Some(c) => {
                                    value.push('\\');
                                    value.push(c);
                                }
                                None => return Err(self.err("unterminated double quote")),
                            },
                            Some('$') => self.dollar(&mut value)?,
                            Some('`') => return Err(self.command_substitution()),
                            Some(c) => value.push(c),
                        }
                    }
                }
                Some('\\') => {
                    self.bump();
                    match self.bump() {
                        Some('\n') | None => {}
                        Some(c) => value.push(c),
                    }
                }
                Some('$') => {
                    self.bump();
                    self.dollar(&mut value)?;
                }
                Some('`') => return Err(self.command_substitution()),
                Some(c @ ('|' | '&' | '<' | '>' | '(' | ')')) => {
                    return Err(self
                        .err(format!("{c:?} outside quotes: environment files can only assign variables")))
                }
                Some(c) => {
                    self.bump();
                    value.push(c);
                }
            }
        }
        Ok(if assign { Word::Assign(name, value) } else { Word::Plain(value) })
    }

    fn command_substitution(&self) -> EnvError {
        self.err("command substitution is not supported in environment files")
    }

    /// After a `$`: expand a parameter into `out`.
    fn dollar(&mut self, out: &mut String) -> Result<(), EnvError> {
        match self.peek() {
            Some('(') => Err(self.command_substitution()),
            Some('{') => {
                self.bump();
                let start = self.pos;
                while matches!(self.peek(), Some(c) if c == '_' || c.is_ascii_alphanumeric()) {
                    self.bump();
                }
                let name: String = self.chars[start..self.pos].iter().collect();
                if !is_name(&name) {
                    return Err(self.err(format!("bad substitution ${{{name}...")));
                }
                let value = self.value_of(&name);
                match self.bump() {
                    Some('}') => out.push_str(&value.unwrap_or_default()),
                    Some(':') if self.peek() == Some('-') => {
                        self.bump();
                        let default = self.until_brace()?;
                        match value {
                            Some(v) if !v.is_empty() => out.push_str(&v),
                            _ => out.push_str(&default),
                        }
                    }
                    Some('-') => {
                        let default = self.until_brace()?;
                        out.push_str(&value.unwrap_or(default));
                    }
                    _ => {
                        return Err(self.err(format!(
                            "unsupported substitution in ${{{name}...}}: only ${{NAME}}, \
                             ${{NAME:-default}} and ${{NAME-default}} are read"
                        )))
                    }
                }
                Ok(())
            }
            Some(c) if c == '_' || c.is_ascii_alphabetic() => {
                let start = self.pos;
                while matches!(self.peek(), Some(c) if c == '_' || c.is_ascii_alphanumeric()) {
                    self.bump();
                }
                let name: String = self.chars[start..self.pos].iter().collect();
                out.push_str(&self.value_of(&name).unwrap_or_default());
                Ok(())
            }
            Some(c) if c.is_ascii_digit() => {
                // Positional parameters: there are none.
                self.bump();
                Ok(())
            }
            _ => {
                out.push('$');
                Ok(())
            }
        }
    }

    /// The literal text up to the closing `}`.
    fn until_brace(&mut self) -> Result<String, EnvError> {
        let mut s = String::new();
        loop {
            match self.bump() {
                None => return Err(self.err("missing '}'")),
                Some('}') => return Ok(s),
                Some('$') | Some('`') => {
                    return Err(self.err("substitutions inside a ${NAME:-default} are not read"))
                }
                Some(c) => s.push(c),
            }
        }
    }
}

enum Word {
    Assign(String, String),
    Plain(String),
}

/// Map a user-given name to what it sets: `PATH` and friends become `SING_USER_DEFINED_*`;
/// `None` (with a warning) for names the user may not set.
fn user_key(key: &str, origin: &str) -> Option<String> {
    match key {
        "PATH" => Some("SING_USER_DEFINED_PATH".into()),
        "PREPEND_PATH" => Some("SING_USER_DEFINED_PREPEND_PATH".into()),
        "APPEND_PATH" => Some("SING_USER_DEFINED_APPEND_PATH".into()),
        k if NOT_OVERRIDABLE.contains(&k) => {
            crate::warning!("Overriding {k} environment variable with {origin} is not permitted");
            None
        }
        k => Some(k.to_string()),
    }
}

impl ContainerEnv {
    /// Build the environment from the host's variables and the command line's options.
    /// Environment files are read here, as the user.
    pub fn build(host: &[(String, String)], opts: &EnvOptions) -> Result<ContainerEnv, EnvError> {
        let host_map: BTreeMap<&str, &str> = host.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();

        // 1. User values: prefixed host variables, then env files, then --env.
        let mut user: BTreeMap<String, String> = BTreeMap::new();
        for prefix in CONTAINER_ENV_PREFIXES {
            for (k, v) in host {
                let Some(key) = k.strip_prefix(prefix) else {
                    continue;
                };
                if key.is_empty() {
                    continue;
                }
                if !is_name(key) {
                    crate::warning!("Ignoring environment variable {k}: {key:?} is not a valid name");
                    continue;
                }
                let Some(key) = user_key(key, k) else {
                    continue;
                };
                match user.get(&key) {
                    Some(old) if old != v => crate::warning!(
                        "Skipping environment variable [{k}={v}], {key} is already overridden \
                         with different value [{old}]"
                    ),
                    Some(_) => {}
                    None => {
                        crate::verbose!("Forwarding {k} as {key} environment variable");
                        user.insert(key, v.clone());
                    }
                }
            }
        }
        let mut cli: Vec<(String, String)> = Vec::new();
        for arg in &opts.env {
            cli.extend(parse_env_arg(arg)?);
        }
        let lookup = |name: &str| host_map.get(name).map(|v| v.to_string());
        for path in &opts.env_files {
            let content = std::fs::read_to_string(path)
                .map_err(|source| EnvError::FileRead { path: path.clone(), source })?;
            crate::debug!("Setting environment variables from file {}", path.display());
            for (k, v) in parse_env_file(&content, &path.display().to_string(), &lookup)? {
                if cli.iter().any(|(n, _)| *n == k) {
                    crate::warning!("Ignored environment file variable {k}: override from --env");
                    continue;
                }
                if let Some(key) = user_key(&k, "--env-file") {
                    user.insert(key, v);
                }
            }
        }
        for (k, v) in cli {
            if let Some(key) = user_key(&k, "--env") {
                user.insert(key, v);
            }
        }

        let mut env = ContainerEnv::default();

        // 2. Host variables.
        if opts.cleanenv {
            env.set("LANG", "C", VarKind::Host);
        }
        for (k, v) in host {
            if RUNTIME_PREFIXES.iter().any(|p| k.starts_with(p))
                || CONTAINER_ENV_PREFIXES.iter().any(|p| k.starts_with(p))
                || k.starts_with("__strata_")
                || k.is_empty()
                || k.contains('=')
            {
                continue;
            }
            let pass =
                ALWAYS_PASS.contains(&k.as_str()) || (!opts.cleanenv && !ALWAYS_OMIT.contains(&k.as_str()));
            if pass {
                env.set(k, v, VarKind::Host);
            }
        }
        env.set("PATH", DEFAULT_PATH, VarKind::Host);

        // 3. User values replace host ones of the same name.
        for (k, v) in user {
            if let Some(host) = env.vars.get(&k) {
                if host.value != v {
                    crate::verbose!(
                        "Environment variable {k} already has value [{v}], will not forward new \
                         value [{}] from parent process environment",
                        host.value
                    );
                }
            }
            env.set(&k, &v, VarKind::User);
        }

        // 4. Runtime variables, which nothing overrides.
        let image = opts.image.to_string_lossy();
        let name = image_name(&opts.image);
        env.set("HOME", opts.home.as_str(), VarKind::Runtime);
        for prefix in ["APPTAINER_", "SINGULARITY_", "STRATA_"] {
            env.set_runtime(&format!("{prefix}CONTAINER"), &image);
            env.set_runtime(&format!("{prefix}NAME"), &name);
            env.set_runtime(&format!("{prefix}COMMAND"), opts.action.name());
        }
        if let Some(instance) = &opts.instance {
            env.set_runtime("APPTAINER_INSTANCE", instance);
            env.set_runtime("SINGULARITY_INSTANCE", instance);
        }
        if !opts.binds.is_empty() {
            let binds = opts.binds.join(",");
            env.set_runtime("APPTAINER_BIND", &binds);
            env.set_runtime("SINGULARITY_BIND", &binds);
        }
        if let Some(shell) = &opts.shell {
            env.set_runtime("APPTAINER_SHELL", shell);
            env.set_runtime("SINGULARITY_SHELL", shell);
        }
        Ok(env)
    }

    fn set(&mut self, name: &str, value: &str, kind: VarKind) {
        self.vars.insert(name.to_string(), EnvVar { value: value.to_string(), kind });
    }

    fn set_runtime(&mut self, name: &str, value: &str) {
        if let Some(old) = self.vars.get(name) {
            if old.kind == VarKind::User && old.value != value {
                crate::warning!("Overriding {name} environment variable is not permitted");
            }
        }
        self.set(name, value, VarKind::Runtime);
    }

    /// The value of a variable.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(|v| v.value.as_str())
    }

    /// The kind of a variable.
    pub fn kind(&self, name: &str) -> Option<VarKind> {
        self.vars.get(name).map(|v| v.kind)
    }

    /// All variables, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &EnvVar)> {
        self.vars.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The names of one kind, sorted.
    pub fn names(&self, kind: VarKind) -> impl Iterator<Item = &str> {
        self.vars.iter().filter(move |(_, v)| v.kind == kind).map(|(k, _)| k.as_str())
    }

    /// The process environment for the plan, `NAME=value`, sorted by name.
    pub fn envp(&self) -> Vec<String> {
        self.vars.iter().map(|(k, v)| format!("{k}={}", v.value)).collect()
    }

    /// Set a variable by hand (the launcher's additions, tests).
    pub fn insert(&mut self, name: &str, value: &str, kind: VarKind) {
        self.set(name, value, kind);
    }
}

/// The image name as `APPTAINER_NAME` gives it.
pub fn image_name(image: &Path) -> String {
    image.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

#[cfg(test)]
mod tests;
