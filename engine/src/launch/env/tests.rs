use super::*;

fn host(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn opts() -> EnvOptions {
    EnvOptions {
        cleanenv: false,
        env: Vec::new(),
        env_files: Vec::new(),
        home: ContainerPath::new("/home/alice").unwrap(),
        image: PathBuf::from("/data/images/ubuntu.sif"),
        action: Action::Exec,
        instance: None,
        binds: Vec::new(),
        shell: None,
    }
}

const HOST: &[(&str, &str)] = &[
    ("TERM", "xterm"),
    ("LANG", "en_US.UTF-8"),
    ("USER", "alice"),
    ("HOME", "/home/alice-host"),
    ("PATH", "/host/bin:/usr/bin"),
    ("LD_LIBRARY_PATH", "/host/lib"),
    ("LD_PRELOAD", "/host/lib/libpreload.so"),
    ("http_proxy", "http://proxy:3128"),
    ("APPTAINER_BIND", "/data"),
    ("SINGULARITY_CACHEDIR", "/tmp/c"),
    ("STRATA_OVERLAY", "x.img"),
    ("APPTAINERENV_FOO", "from-apptainerenv"),
    ("SINGULARITYENV_FOO", "from-singularityenv"),
    ("SINGULARITYENV_BAR", "bar"),
];

#[test]
fn host_variables_pass_except_the_runtimes_own_and_the_omitted() {
    let env = ContainerEnv::build(&host(HOST), &opts()).unwrap();
    assert_eq!(env.get("TERM"), Some("xterm"));
    assert_eq!(env.get("LANG"), Some("en_US.UTF-8"));
    assert_eq!(env.get("USER"), Some("alice"));
    assert_eq!(env.get("LD_PRELOAD"), Some("/host/lib/libpreload.so"));
    assert_eq!(env.kind("USER"), Some(VarKind::Host));
    assert_eq!(env.get("LD_LIBRARY_PATH"), None);
    assert_eq!(env.get("SINGULARITY_CACHEDIR"), None);
    assert_eq!(env.get("STRATA_OVERLAY"), None);
    assert_eq!(env.get("APPTAINERENV_FOO"), None);
    // HOME is the container's, PATH the default (restored unless the image sets one).
    assert_eq!(env.get("HOME"), Some("/home/alice"));
    assert_eq!(env.kind("HOME"), Some(VarKind::Runtime));
    assert_eq!(env.get("PATH"), Some(DEFAULT_PATH));
    assert_eq!(env.kind("PATH"), Some(VarKind::Host));
    // Host APPTAINER_BIND is not forwarded, and no binds were given.
    assert_eq!(env.get("APPTAINER_BIND"), None);
}

#[test]
fn cleanenv_keeps_only_term_and_proxies_and_sets_lang_c() {
    let mut o = opts();
    o.cleanenv = true;
    let env = ContainerEnv::build(&host(HOST), &o).unwrap();
    assert_eq!(env.get("TERM"), Some("xterm"));
    assert_eq!(env.get("http_proxy"), Some("http://proxy:3128"));
    assert_eq!(env.get("LANG"), Some("C"));
    assert_eq!(env.get("USER"), None);
    assert_eq!(env.get("LD_PRELOAD"), None);
    // User values still apply.
    assert_eq!(env.get("FOO"), Some("from-apptainerenv"));
    let host_names: Vec<&str> = env.names(VarKind::Host).collect();
    assert_eq!(host_names, ["LANG", "PATH", "TERM", "http_proxy"]);
}

#[test]
fn user_values_precedence_env_over_file_over_prefixes() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("env");
    std::fs::write(&file, "FOO=from-file\nBAZ=file-baz\nQUX=$USER-x\n").unwrap();
    let mut o = opts();
    o.env_files = vec![file];
    o.env = vec!["BAZ=cli-baz,LIST=a,b".into()];
    let env = ContainerEnv::build(&host(HOST), &o).unwrap();
    assert_eq!(env.get("FOO"), Some("from-file"));
    assert_eq!(env.get("BAR"), Some("bar"));
    assert_eq!(env.get("BAZ"), Some("cli-baz"));
    assert_eq!(env.get("LIST"), Some("a,b"));
    assert_eq!(env.get("QUX"), Some("alice-x"));
    assert_eq!(env.kind("FOO"), Some(VarKind::User));

    // Without the file, APPTAINERENV_ wins over SINGULARITYENV_, STRATAENV_ over both.
    let env = ContainerEnv::build(&host(HOST), &opts()).unwrap();
    assert_eq!(env.get("FOO"), Some("from-apptainerenv"));
    let mut h = host(HOST);
    h.push(("STRATAENV_FOO".into(), "from-strataenv".into()));
    let env = ContainerEnv::build(&h, &opts()).unwrap();
    assert_eq!(env.get("FOO"), Some("from-strataenv"));
}

#[test]
fn a_user_value_replaces_the_host_value() {
    let mut o = opts();
    o.env = vec!["USER=bob".into(), "LD_LIBRARY_PATH=/opt/lib".into()];
    let env = ContainerEnv::build(&host(HOST), &o).unwrap();
    assert_eq!(env.get("USER"), Some("bob"));
    assert_eq!(env.kind("USER"), Some(VarKind::User));
    // LD_LIBRARY_PATH is not taken from the host but may be set explicitly.
    assert_eq!(env.get("LD_LIBRARY_PATH"), Some("/opt/lib"));
}

#[test]
fn path_and_home_are_special() {
    let mut o = opts();
    o.env = vec!["PATH=/custom/bin".into(), "HOME=/elsewhere".into()];
    let mut h = host(HOST);
    h.push(("APPTAINERENV_PREPEND_PATH".into(), "/pre".into()));
    h.push(("APPTAINERENV_APPEND_PATH".into(), "/post".into()));
    let env = ContainerEnv::build(&h, &o).unwrap();
    assert_eq!(env.get("SING_USER_DEFINED_PATH"), Some("/custom/bin"));
    assert_eq!(env.get("SING_USER_DEFINED_PREPEND_PATH"), Some("/pre"));
    assert_eq!(env.get("SING_USER_DEFINED_APPEND_PATH"), Some("/post"));
    assert_eq!(env.get("PATH"), Some(DEFAULT_PATH));
    assert_eq!(env.get("HOME"), Some("/home/alice"));
}

#[test]
fn runtime_variables_scripts_rely_on() {
    let mut o = opts();
    o.action = Action::Run;
    o.instance = Some("web".into());
    o.binds = vec!["/data:/data".into(), "/scratch".into()];
    o.shell = Some("/bin/zsh".into());
    o.env = vec!["APPTAINER_NAME=spoofed".into()];
    let env = ContainerEnv::build(&host(HOST), &o).unwrap();
    for p in ["APPTAINER_", "SINGULARITY_", "STRATA_"] {
        assert_eq!(env.get(&format!("{p}CONTAINER")), Some("/data/images/ubuntu.sif"));
        assert_eq!(env.get(&format!("{p}NAME")), Some("ubuntu.sif"));
        assert_eq!(env.get(&format!("{p}COMMAND")), Some("run"));
    }
    assert_eq!(env.kind("APPTAINER_NAME"), Some(VarKind::Runtime));
    assert_eq!(env.get("APPTAINER_INSTANCE"), Some("web"));
    assert_eq!(env.get("APPTAINER_BIND"), Some("/data:/data,/scratch"));
    assert_eq!(env.get("SINGULARITY_SHELL"), Some("/bin/zsh"));
    let envp = env.envp();
    assert!(envp.contains(&"HOME=/home/alice".to_string()));
    assert!(envp.windows(2).all(|w| w[0] < w[1]), "sorted, unique");
}

#[test]
fn env_arguments() {
    assert_eq!(parse_env_arg("A=1,B=2").unwrap(), [("A".into(), "1".into()), ("B".into(), "2".into())]);
    assert_eq!(parse_env_arg("A=x=y").unwrap(), [("A".to_string(), "x=y".to_string())]);
    assert_eq!(parse_env_arg("PATH=/a,/b").unwrap(), [("PATH".to_string(), "/a,/b".to_string())]);
    assert_eq!(parse_env_arg("EMPTY=").unwrap(), [("EMPTY".to_string(), String::new())]);
    assert_eq!(
        parse_env_arg("novalue").unwrap_err().to_string(),
        "--env \"novalue\": must be formatted as NAME=value"
    );
    assert!(matches!(parse_env_arg("1A=x").unwrap_err(), EnvError::Name { .. }));
    assert!(matches!(parse_env_arg("=x").unwrap_err(), EnvError::Format(_)));
}

fn file(content: &str) -> Result<Vec<(String, String)>, EnvError> {
    let lookup = |n: &str| match n {
        "USER" => Some("alice".to_string()),
        "EMPTY" => Some(String::new()),
        _ => None,
    };
    parse_env_file(content, "vars.env", &lookup)
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

#[test]
fn env_files_are_read_like_shell_assignments() {
    let content = r#"
# comment
A=plain
export B="double $USER ${USER} \"q\" \$x"
C='single $USER "x"'   # trailing comment
D=a\ b;E=${MISSING:-dflt} F=${EMPTY:-e} G=${EMPTY-g} H=$A/sub
I="multi
line"
export J
K=$1x
L=cost$
UID=5
"#;
    assert_eq!(
        file(content).unwrap(),
        pairs(&[
            ("A", "plain"),
            ("B", r#"double alice alice "q" $x"#),
            ("C", r#"single $USER "x""#),
            ("D", "a b"),
            ("E", "dflt"),
            ("F", "e"),
            ("G", ""),
            ("H", "plain/sub"),
            ("I", "multi\nline"),
            ("K", "x"),
            ("L", "cost$"),
        ])
    );
}

#[test]
fn env_files_never_run_anything() {
    for (content, line, what) in [
        ("A=1\nB=$(id)\n", 2, "command substitution"),
        ("A=`id`", 1, "command substitution"),
        ("A=1\n\nrm -rf /\n", 3, "not a NAME=value assignment"),
        ("A=1 | cat", 1, "outside quotes"),
        ("A='open", 1, "unterminated single quote"),
        ("A=\"${X:-$(id)}\"", 1, "substitutions inside"),
        ("A=${X/a/b}", 1, "unsupported substitution"),
    ] {
        let err = file(content).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with(&format!("vars.env:{line}: ")), "{content:?}: {text}");
        assert!(text.contains(what), "{content:?}: {text}");
    }
}

#[test]
fn a_missing_env_file_names_the_file() {
    let mut o = opts();
    o.env_files = vec![PathBuf::from("/nonexistent/vars.env")];
    let err = ContainerEnv::build(&host(HOST), &o).unwrap_err();
    assert!(
        err.to_string().starts_with("could not read environment file \"/nonexistent/vars.env\": "),
        "{err}"
    );
}

#[test]
fn names() {
    assert!(is_name("A"));
    assert!(is_name("_a1"));
    assert!(!is_name("1a"));
    assert!(!is_name(""));
    assert!(!is_name("A-B"));
    assert!(!is_name("BASH_FUNC_module%%"));
}
