//! Bind mounts, home and working directory requested on the command line:
//! `-B/--bind src[:dst[:opts]]` (repeatable, comma-separated lists, `APPTAINER_BIND` /
//! `SINGULARITY_BIND` appended), `-H/--home src[:dst]`, `--no-home`, `--pwd`.
//!
//! Parsing is in two steps: [`parse_bind_list`] reads the syntax only (pure), then
//! [`RawBind::resolve`] checks the source on the host (it must exist) and the destination
//! (a [`ContainerPath`]).
//!
//! Syntax, as Apptainer reads it: items are separated by commas; an item is `src`, `src:dst` or
//! `src:dst:opts`; after a `src:dst:opt` item, the following items that are bare options (`ro`,
//! `rw`) belong to it (`a:/a:ro,rw` is one bind), anything else starts a new bind. `\,` and `\:`
//! put a literal comma or colon in a path. Whitespace around items is ignored.

use std::fmt;
use std::io;
use std::path::{Component, Path, PathBuf};

/// A path inside the container: absolute, normalised (no `.`, no empty or trailing
/// components), and never containing `..`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContainerPath(String);

/// Why a string is not a [`ContainerPath`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContainerPathError {
    #[error("the path is empty")]
    Empty,
    #[error("{0} is not an absolute path")]
    Relative(String),
    #[error("{0} contains '..', which is not allowed in a path inside the container")]
    DotDot(String),
    #[error("{0:?} contains a NUL byte")]
    Nul(String),
}

impl ContainerPath {
    /// Check and normalise a path inside the container.
    pub fn new(path: &str) -> Result<ContainerPath, ContainerPathError> {
        if path.is_empty() {
            return Err(ContainerPathError::Empty);
        }
        if path.contains('\0') {
            return Err(ContainerPathError::Nul(path.to_string()));
        }
        if !path.starts_with('/') {
            return Err(ContainerPathError::Relative(path.to_string()));
        }
        let mut out = String::with_capacity(path.len());
        for part in path.split('/') {
            match part {
                "" | "." => {}
                ".." => return Err(ContainerPathError::DotDot(path.to_string())),
                p => {
                    out.push('/');
                    out.push_str(p);
                }
            }
        }
        if out.is_empty() {
            out.push('/');
        }
        Ok(ContainerPath(out))
    }

    /// The root directory `/`.
    pub fn root() -> ContainerPath {
        ContainerPath("/".to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn as_path(&self) -> &Path {
        Path::new(&self.0)
    }

    pub fn is_root(&self) -> bool {
        self.0 == "/"
    }

    /// The components below `/`, in order (none for the root).
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|c| !c.is_empty())
    }

    /// True if `self` is `other` or lies below it (component-wise, never a string prefix).
    pub fn starts_with(&self, other: &ContainerPath) -> bool {
        let mut mine = self.components();
        other.components().all(|c| mine.next() == Some(c))
    }
}

impl fmt::Display for ContainerPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<Path> for ContainerPath {
    fn as_ref(&self) -> &Path {
        self.as_path()
    }
}

impl TryFrom<String> for ContainerPath {
    type Error = ContainerPathError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        ContainerPath::new(&s)
    }
}

impl From<ContainerPath> for String {
    fn from(p: ContainerPath) -> String {
        p.0
    }
}

impl serde::Serialize for ContainerPath {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for ContainerPath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ContainerPath::new(&s).map_err(serde::de::Error::custom)
    }
}

/// One bind mount: a host path (canonical, known to exist when resolved) onto a path in the
/// container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindSpec {
    pub source: PathBuf,
    pub dest: ContainerPath,
    pub readonly: bool,
}

/// A bind as written, before the filesystem is consulted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawBind {
    /// The item as the user wrote it (for messages).
    pub spec: String,
    pub source: String,
    /// `None` when only the source was given: the destination is the source's absolute path.
    pub dest: Option<String>,
    pub readonly: bool,
}

/// Why a bind, home or working directory request is refused.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("bad bind specification {spec:?}: {problem}")]
    Syntax { spec: String, problem: String },
    #[error("{option} is not a valid bind option (in {spec:?}); the options are ro and rw")]
    InvalidOption { option: String, spec: String },
    #[error(
        "bind option {option} (in {spec:?}) is for binding data images, which strata does not \
         support yet"
    )]
    Unsupported { option: String, spec: String },
    #[error("mount source {0} doesn't exist")]
    SourceMissing(PathBuf),
    #[error("while getting stat for {path}: {source}")]
    SourceStat { path: PathBuf, source: io::Error },
    #[error("bad bind destination in {spec:?}: {source}")]
    Dest { spec: String, source: ContainerPathError },
    #[error("bad bind destination in {spec:?}: a bind mount cannot replace the container's /")]
    DestRoot { spec: String },
    #[error("home argument has incorrect number of elements: {count} (in {spec:?}; use src[:dst])")]
    HomeElements { spec: String, count: usize },
    #[error("home directory {0} doesn't exist")]
    HomeMissing(PathBuf),
    #[error("home directory {0} is not a directory")]
    HomeNotDirectory(PathBuf),
    #[error("bad home destination in {spec:?}: {source}")]
    HomeDest { spec: String, source: ContainerPathError },
    #[error("bad --pwd {path:?}: {source}")]
    Pwd { path: String, source: ContainerPathError },
}

/// Split on unescaped `sep`; `\sep` becomes a literal `sep`, other backslashes stay.
fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' && chars.peek() == Some(&sep) {
            parts.last_mut().expect("never empty").push(sep);
            chars.next();
        } else if c == sep {
            parts.push(String::new());
        } else {
            parts.last_mut().expect("never empty").push(c);
        }
    }
    parts
}

/// Split on unescaped commas, keeping `\:` escapes for the colon split that follows.
fn split_items(s: &str) -> Vec<String> {
    let mut items = vec![String::new()];
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&',') => {
                items.last_mut().expect("never empty").push(',');
                chars.next();
            }
            ',' => items.push(String::new()),
            _ => items.last_mut().expect("never empty").push(c),
        }
    }
    items
}

/// A bare option item, as `ro`, `rw`, `id=2`, `image-src=/x`.
fn is_option(item: &str) -> bool {
    matches!(item, "ro" | "rw") || item.starts_with("image-src=") || item.starts_with("id=")
}

fn apply_option(bind: &mut RawBind, option: &str) -> Result<(), BindError> {
    match option {
        "ro" => bind.readonly = true,
        "rw" => {}
        o if o.starts_with("image-src=") || o.starts_with("id=") => {
            return Err(BindError::Unsupported {
                option: o.split('=').next().unwrap_or(o).to_string(),
                spec: bind.spec.clone(),
            })
        }
        o => return Err(BindError::InvalidOption { option: o.to_string(), spec: bind.spec.clone() }),
    }
    Ok(())
}

/// Parse one `-B` value (or one `APPTAINER_BIND` value): a comma-separated list of binds.
pub fn parse_bind_list(value: &str) -> Result<Vec<RawBind>, BindError> {
    let mut binds: Vec<RawBind> = Vec::new();
    // Whether the last bind had an options field, so that bare options continue it.
    let mut takes_options = false;
    for item in split_items(value) {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        if takes_options && is_option(item) {
            let last = binds.last_mut().expect("takes_options implies a bind");
            last.spec.push(',');
            last.spec.push_str(item);
            apply_option(last, item)?;
            continue;
        }
        let fields = split_unescaped(item, ':');
        if fields.len() > 3 {
            return Err(BindError::Syntax {
                spec: item.to_string(),
                problem: format!(
                    "{} fields separated by ':', at most 3 are allowed (src[:dst[:options]]; \
                     write a ':' inside a path as '\\:')",
                    fields.len()
                ),
            });
        }
        let source = fields[0].trim().to_string();
        if source.is_empty() {
            return Err(BindError::Syntax { spec: item.to_string(), problem: "the source is empty".into() });
        }
        let dest = match fields.get(1).map(|d| d.trim()) {
            None => None,
            Some("") => {
                return Err(BindError::Syntax {
                    spec: item.to_string(),
                    problem: "the destination is empty".into(),
                })
            }
            Some(d) => Some(d.to_string()),
        };
        let mut bind = RawBind { spec: item.to_string(), source, dest, readonly: false };
        takes_options = false;
        if let Some(options) = fields.get(2) {
            let option = options.trim();
            if option.is_empty() {
                return Err(BindError::Syntax {
                    spec: item.to_string(),
                    problem: "the options field is empty".into(),
                });
            }
            apply_option(&mut bind, option)?;
            takes_options = true;
        }
        binds.push(bind);
    }
    Ok(binds)
}

/// The absolute form of a host path given relative to `cwd`, folded lexically.
fn absolute(path: &str, cwd: &Path) -> PathBuf {
    let joined = cwd.join(path);
    let mut out = PathBuf::from("/");
    for c in joined.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

impl RawBind {
    /// Check the source exists (following symlinks) and the destination is a valid container
    /// path. The source becomes canonical; a missing destination defaults to the source's
    /// absolute path as written (not symlink-resolved).
    pub fn resolve(&self, cwd: &Path) -> Result<BindSpec, BindError> {
        let abs = absolute(&self.source, cwd);
        let source = match std::fs::canonicalize(&abs) {
            Ok(p) => p,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(BindError::SourceMissing(abs)),
            Err(e) => return Err(BindError::SourceStat { path: abs, source: e }),
        };
        let dest_str = match &self.dest {
            Some(d) => d.clone(),
            None => abs.to_string_lossy().into_owned(),
        };
        let dest = ContainerPath::new(&dest_str)
            .map_err(|source| BindError::Dest { spec: self.spec.clone(), source })?;
        if dest.is_root() {
            return Err(BindError::DestRoot { spec: self.spec.clone() });
        }
        Ok(BindSpec { source, dest, readonly: self.readonly })
    }
}

/// The bind values from the environment, appended after the command line's as Apptainer does:
/// for each of `BIND` and `BINDPATH`, the first set of `STRATA_`, `APPTAINER_`, `SINGULARITY_`.
pub fn bind_env_values(getenv: impl Fn(&str) -> Option<String>) -> Vec<String> {
    let mut values = Vec::new();
    for key in ["BIND", "BINDPATH"] {
        let found = ["STRATA_", "APPTAINER_", "SINGULARITY_"]
            .iter()
            .filter_map(|prefix| getenv(&format!("{prefix}{key}")))
            .find(|v| !v.trim().is_empty());
        if let Some(v) = found {
            values.push(v);
        }
    }
    values
}

/// All binds of a command: `-B` values first, then the environment's ([`bind_env_values`]),
/// each checked. Relative sources are taken from `cwd`.
pub fn resolve_binds(cli: &[String], env_values: &[String], cwd: &Path) -> Result<Vec<BindSpec>, BindError> {
    let mut binds = Vec::new();
    for value in cli.iter().chain(env_values) {
        for raw in parse_bind_list(value)? {
            binds.push(raw.resolve(cwd)?);
        }
    }
    Ok(binds)
}

/// The home directory in the container, and what to mount there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Home {
    /// `$HOME` inside the container.
    pub dest: ContainerPath,
    /// The host directory to mount at `dest`; `None` with `--no-home` (or when the default home
    /// cannot be mounted, with a warning).
    pub source: Option<PathBuf>,
    /// Given with `-H/--home` (the policy's `user bind control` governs it).
    pub custom: bool,
}

/// Resolve `-H/--home src[:dst]` / `--no-home` against the user's home from the passwd
/// database. Without `-H`, the home is the user's own, at the same path.
pub fn resolve_home(
    spec: Option<&str>,
    no_home: bool,
    user_home: &Path,
    cwd: &Path,
) -> Result<Home, BindError> {
    let Some(spec) = spec else {
        let dest = ContainerPath::new(&user_home.to_string_lossy()).unwrap_or_else(|e| {
            crate::warning!(
                "home directory {} from the passwd database is unusable ({e}), using /",
                user_home.display()
            );
            ContainerPath::root()
        });
        let source = if no_home {
            None
        } else if dest.is_root() {
            crate::warning!("Skipping impossible home directory mount to '/'");
            None
        } else if !user_home.is_dir() {
            crate::verbose!("home directory {} does not exist, not mounting it", user_home.display());
            None
        } else {
            Some(user_home.to_path_buf())
        };
        return Ok(Home { dest, source, custom: false });
    };

    let fields = split_unescaped(spec, ':');
    if fields.len() > 2 || fields[0].is_empty() {
        return Err(BindError::HomeElements { spec: spec.to_string(), count: fields.len() });
    }
    let abs = absolute(&fields[0], cwd);
    let dest_str = fields.get(1).cloned().unwrap_or_else(|| abs.to_string_lossy().into_owned());
    let dest = ContainerPath::new(&dest_str)
        .map_err(|source| BindError::HomeDest { spec: spec.to_string(), source })?;
    if no_home {
        return Ok(Home { dest, source: None, custom: true });
    }
    let source = match std::fs::canonicalize(&abs) {
        Ok(p) => p,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(BindError::HomeMissing(abs)),
        Err(e) => return Err(BindError::SourceStat { path: abs, source: e }),
    };
    if !source.is_dir() {
        return Err(BindError::HomeNotDirectory(abs));
    }
    if dest.is_root() {
        return Err(BindError::DestRoot { spec: spec.to_string() });
    }
    Ok(Home { dest, source: Some(source), custom: true })
}

/// `--pwd PATH`: the working directory inside the container.
pub fn parse_pwd(path: &str) -> Result<ContainerPath, BindError> {
    ContainerPath::new(path).map_err(|source| BindError::Pwd { path: path.to_string(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(source: &str, dest: Option<&str>, readonly: bool) -> (String, Option<String>, bool) {
        (source.to_string(), dest.map(str::to_string), readonly)
    }

    fn parsed(value: &str) -> Vec<(String, Option<String>, bool)> {
        parse_bind_list(value).unwrap().into_iter().map(|b| (b.source, b.dest, b.readonly)).collect()
    }

    #[test]
    fn container_paths_are_absolute_normalised_and_never_dotdot() {
        assert_eq!(ContainerPath::new("/a//b/./c/").unwrap().as_str(), "/a/b/c");
        assert_eq!(ContainerPath::new("/").unwrap().as_str(), "/");
        assert_eq!(ContainerPath::new("//.//").unwrap().as_str(), "/");
        assert!(ContainerPath::new("/").unwrap().is_root());
        assert_eq!(ContainerPath::new("a/b"), Err(ContainerPathError::Relative("a/b".into())));
        assert_eq!(ContainerPath::new(""), Err(ContainerPathError::Empty));
        assert_eq!(ContainerPath::new("/a/../etc"), Err(ContainerPathError::DotDot("/a/../etc".into())));
        assert!(ContainerPath::new("/..").is_err());
        assert!(ContainerPath::new("/a\0b").is_err());
        // `..` as part of a name is fine.
        assert_eq!(ContainerPath::new("/a/..b/c..").unwrap().as_str(), "/a/..b/c..");
        assert_eq!(
            ContainerPath::new("/a/../etc").unwrap_err().to_string(),
            "/a/../etc contains '..', which is not allowed in a path inside the container"
        );
    }

    #[test]
    fn container_path_prefixes_are_component_wise() {
        let p = |s| ContainerPath::new(s).unwrap();
        assert!(p("/home/alice/x").starts_with(&p("/home/alice")));
        assert!(p("/home/alice").starts_with(&p("/home/alice")));
        assert!(p("/home").starts_with(&p("/")));
        assert!(!p("/home/alice2").starts_with(&p("/home/alice")));
        assert!(!p("/home").starts_with(&p("/home/alice")));
        assert_eq!(p("/a/b").components().collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn container_paths_deserialize_only_when_valid() {
        let ok: ContainerPath = serde_json::from_str("\"/opt//x/\"").unwrap();
        assert_eq!(ok.as_str(), "/opt/x");
        assert_eq!(serde_json::to_string(&ok).unwrap(), "\"/opt/x\"");
        assert!(serde_json::from_str::<ContainerPath>("\"/opt/../etc\"").is_err());
        assert!(serde_json::from_str::<ContainerPath>("\"opt\"").is_err());
    }

    #[test]
    fn bind_syntax_forms() {
        assert_eq!(parsed("/data"), [raw("/data", None, false)]);
        assert_eq!(parsed("/data:/mnt"), [raw("/data", Some("/mnt"), false)]);
        assert_eq!(parsed("/data:/mnt:ro"), [raw("/data", Some("/mnt"), true)]);
        assert_eq!(parsed("/data:/mnt:rw"), [raw("/data", Some("/mnt"), false)]);
        assert_eq!(
            parsed("/a,/b:/c, /d:/e:ro ,"),
            [raw("/a", None, false), raw("/b", Some("/c"), false), raw("/d", Some("/e"), true)]
        );
        // Options continue the previous bind once it has an options field.
        assert_eq!(parsed("/a:/b:rw,ro,/c"), [raw("/a", Some("/b"), true), raw("/c", None, false)]);
        // A bare `ro` after a bind without options is a source named "ro".
        assert_eq!(parsed("/a:/b,ro"), [raw("/a", Some("/b"), false), raw("ro", None, false)]);
        // Escapes.
        assert_eq!(parsed(r"/with\,comma:/with\:colon:ro"), [raw("/with,comma", Some("/with:colon"), true)]);
        assert_eq!(parsed(""), []);
    }

    #[test]
    fn bind_syntax_errors_name_the_spec() {
        let err = parse_bind_list("/a:/b:ro:x").unwrap_err();
        assert!(matches!(err, BindError::Syntax { .. }));
        assert!(err.to_string().contains("\"/a:/b:ro:x\""), "{err}");
        let err = parse_bind_list("/a:/b:rx").unwrap_err();
        assert_eq!(
            err.to_string(),
            "rx is not a valid bind option (in \"/a:/b:rx\"); the options are ro and rw"
        );
        // Not an option name: a new bind whose source is "bogus=1" (it must then exist).
        assert_eq!(parsed("/a:/b:ro,bogus=1"), [raw("/a", Some("/b"), true), raw("bogus=1", None, false)]);
        assert!(matches!(parse_bind_list(":/b").unwrap_err(), BindError::Syntax { .. }));
        assert!(matches!(parse_bind_list("/a:").unwrap_err(), BindError::Syntax { .. }));
        assert!(matches!(parse_bind_list("/a:/b:").unwrap_err(), BindError::Syntax { .. }));
        let err = parse_bind_list("img.sqfs:/data:image-src=/").unwrap_err();
        assert!(matches!(err, BindError::Unsupported { .. }), "{err}");
        let err = parse_bind_list("img.sif:/data:ro,id=4").unwrap_err();
        assert!(matches!(err, BindError::Unsupported { .. }), "{err}");
    }

    #[test]
    fn resolving_checks_the_source_and_defaults_the_destination() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().canonicalize().unwrap();
        std::fs::create_dir(base.join("data")).unwrap();
        std::os::unix::fs::symlink(base.join("data"), base.join("link")).unwrap();

        // Relative source against cwd; the destination is the absolute path as written.
        let b = &parse_bind_list("link").unwrap()[0];
        let spec = b.resolve(&base).unwrap();
        assert_eq!(spec.source, base.join("data"));
        assert_eq!(spec.dest.as_path(), base.join("link"));
        assert!(!spec.readonly);

        let spec = parse_bind_list("data:/mnt/d/:ro").unwrap()[0].resolve(&base).unwrap();
        assert_eq!(spec.dest.as_str(), "/mnt/d");
        assert!(spec.readonly);

        let err = parse_bind_list("missing:/mnt").unwrap()[0].resolve(&base).unwrap_err();
        assert_eq!(err.to_string(), format!("mount source {} doesn't exist", base.join("missing").display()));

        let err = parse_bind_list("data:relative").unwrap()[0].resolve(&base).unwrap_err();
        assert_eq!(
            err.to_string(),
            "bad bind destination in \"data:relative\": relative is not an absolute path"
        );
        let err = parse_bind_list("data:/x/../../etc").unwrap()[0].resolve(&base).unwrap_err();
        assert!(matches!(err, BindError::Dest { source: ContainerPathError::DotDot(_), .. }));
        let err = parse_bind_list("data:/").unwrap()[0].resolve(&base).unwrap_err();
        assert!(matches!(err, BindError::DestRoot { .. }), "{err}");
    }

    #[test]
    fn environment_binds_are_appended_after_the_command_line() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().canonicalize().unwrap();
        for d in ["a", "b", "c", "d"] {
            std::fs::create_dir(base.join(d)).unwrap();
        }
        let env = |k: &str| match k {
            "APPTAINER_BIND" => Some(format!("{0}/b:/b,{0}/c:/c:ro", base.display())),
            "SINGULARITY_BIND" => Some("/ignored-when-apptainer-is-set".into()),
            "SINGULARITY_BINDPATH" => Some(format!("{}/d", base.display())),
            _ => None,
        };
        let values = bind_env_values(env);
        assert_eq!(values.len(), 2);
        let binds = resolve_binds(&["a:/a".to_string()], &values, &base).unwrap();
        let dests: Vec<&str> = binds.iter().map(|b| b.dest.as_str()).collect();
        assert_eq!(dests, ["/a", "/b", "/c", base.join("d").to_str().unwrap()]);
        assert!(binds[2].readonly);

        // STRATA_ wins over APPTAINER_.
        let env = |k: &str| match k {
            "STRATA_BIND" => Some("/s".to_string()),
            "APPTAINER_BIND" => Some("/a".to_string()),
            _ => None,
        };
        assert_eq!(bind_env_values(env), ["/s"]);
    }

    #[test]
    fn home_forms() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().canonicalize().unwrap();
        std::fs::create_dir(base.join("h")).unwrap();
        std::fs::write(base.join("file"), "").unwrap();

        // Default: the user's home at the same path.
        let home = resolve_home(None, false, &base.join("h"), &base).unwrap();
        assert_eq!(home.dest.as_path(), base.join("h"));
        assert_eq!(home.source.as_deref(), Some(base.join("h").as_path()));
        assert!(!home.custom);
        // --no-home keeps $HOME but mounts nothing.
        let home = resolve_home(None, true, &base.join("h"), &base).unwrap();
        assert_eq!(home.dest.as_path(), base.join("h"));
        assert_eq!(home.source, None);
        // A passwd home that does not exist (nobody's /nonexistent) is not mounted.
        let home = resolve_home(None, false, Path::new("/nonexistent"), &base).unwrap();
        assert_eq!(home.dest.as_str(), "/nonexistent");
        assert_eq!(home.source, None);
        // A passwd home of / is never mounted.
        let home = resolve_home(None, false, Path::new("/"), &base).unwrap();
        assert!(home.dest.is_root());
        assert_eq!(home.source, None);

        // -H src: same path inside.
        let home = resolve_home(Some("h"), false, Path::new("/home/x"), &base).unwrap();
        assert_eq!(home.dest.as_path(), base.join("h"));
        assert_eq!(home.source.as_deref(), Some(base.join("h").as_path()));
        assert!(home.custom);
        // -H src:dst
        let home = resolve_home(Some("h:/home/e2e"), false, Path::new("/x"), &base).unwrap();
        assert_eq!(home.dest.as_str(), "/home/e2e");
        // Errors.
        let err = resolve_home(Some("a:b:c"), false, Path::new("/x"), &base).unwrap_err();
        assert!(err.to_string().starts_with("home argument has incorrect number of elements: 3"), "{err}");
        let err = resolve_home(Some("missing"), false, Path::new("/x"), &base).unwrap_err();
        assert!(matches!(err, BindError::HomeMissing(_)), "{err}");
        let err = resolve_home(Some("file"), false, Path::new("/x"), &base).unwrap_err();
        assert!(matches!(err, BindError::HomeNotDirectory(_)), "{err}");
        let err = resolve_home(Some("h:rel"), false, Path::new("/x"), &base).unwrap_err();
        assert!(matches!(err, BindError::HomeDest { .. }), "{err}");
        let err = resolve_home(Some("h:/"), false, Path::new("/x"), &base).unwrap_err();
        assert!(matches!(err, BindError::DestRoot { .. }), "{err}");
    }

    #[test]
    fn pwd_must_be_a_container_path() {
        assert_eq!(parse_pwd("/work//dir/").unwrap().as_str(), "/work/dir");
        let err = parse_pwd("work").unwrap_err();
        assert_eq!(err.to_string(), "bad --pwd \"work\": work is not an absolute path");
        assert!(parse_pwd("/a/../b").is_err());
    }

    proptest::proptest! {
        #[test]
        fn container_paths_are_normal_and_stable(s in "(/|[a-z.]{1,3}){0,12}") {
            match ContainerPath::new(&s) {
                Ok(p) => {
                    let t = p.as_str();
                    proptest::prop_assert!(t.starts_with('/'));
                    proptest::prop_assert!(!t.contains("//"));
                    proptest::prop_assert!(t == "/" || !t.ends_with('/'));
                    proptest::prop_assert!(p.components().all(|c| c != "." && c != ".."));
                    proptest::prop_assert_eq!(ContainerPath::new(t).unwrap(), p.clone());
                    proptest::prop_assert!(p.starts_with(&ContainerPath::root()));
                }
                Err(_) => proptest::prop_assert!(
                    !s.starts_with('/') || s.split('/').any(|c| c == "..")
                ),
            }
        }
    }
}
