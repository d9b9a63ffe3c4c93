//! The action scripts, generated and then run with the host's shells (dash, bash, busybox sh)
//! against a directory laid out like an image.

use super::*;
use crate::launch::binds::ContainerPath;
use crate::launch::env::EnvOptions;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;

/// The host shells to run the scripts with: each as an argv prefix.
fn shells() -> Vec<Vec<String>> {
    let mut found = Vec::new();
    for candidate in [
        vec!["/bin/sh"],
        vec!["/bin/bash"],
        vec!["/usr/bin/bash"],
        vec!["/bin/busybox", "sh"],
        vec!["/usr/bin/busybox", "sh"],
    ] {
        if Path::new(candidate[0]).is_file()
            && !found.iter().any(|f: &Vec<String>| {
                std::fs::canonicalize(&f[0]).ok() == std::fs::canonicalize(candidate[0]).ok()
                    && f.len() == candidate.len()
            })
        {
            found.push(candidate.iter().map(|s| s.to_string()).collect());
        }
    }
    assert!(!found.is_empty(), "no /bin/sh on this host");
    found
}

/// A directory laid out like an image, with a trace file the image's scripts append to.
struct FakeRoot {
    dir: tempfile::TempDir,
}

impl FakeRoot {
    fn new() -> FakeRoot {
        FakeRoot { dir: tempfile::tempdir().unwrap() }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().canonicalize().unwrap()
    }

    fn trace_path(&self) -> PathBuf {
        self.root().join("trace")
    }

    fn trace(&self) -> String {
        std::fs::read_to_string(self.trace_path()).unwrap_or_default()
    }

    /// Write an executable file under the root.
    fn file(&self, rel: &str, content: &str) {
        let p = self.root().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// An environment script that logs its name and what it sees, then runs `body`.
    fn env_script(&self, name: &str, body: &str) {
        let trace = self.trace_path();
        self.file(
            &format!(".singularity.d/env/{name}"),
            &format!(
                "echo \"{name} host=${{HOSTVAR-unset}} user=${{USERVAR-unset}} \
                 name=${{APPTAINER_NAME-unset}} path=${{PATH-unset}}\" >> {}\n{body}\n",
                trace.display()
            ),
        );
    }

    /// An executable that prints its argv (one per line) and a few variables.
    fn probe(&self, rel: &str, label: &str) {
        self.file(
            rel,
            &format!(
                "#!/bin/sh\necho \"{label}\"\nfor a in \"$@\"; do echo \"arg=$a\"; done\n\
                 echo \"SHELL=${{SHELL-unset}}\"\necho \"PS1=$PS1\"\n"
            ),
        );
    }
}

fn env_with(host: &[(&str, &str)], user: &[&str], action: Action) -> ContainerEnv {
    let host: Vec<(String, String)> = host.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let opts = EnvOptions {
        cleanenv: false,
        env: user.iter().map(|s| s.to_string()).collect(),
        env_files: Vec::new(),
        home: ContainerPath::new("/home/alice").unwrap(),
        image: PathBuf::from("/images/test.sif"),
        action,
        instance: None,
        binds: Vec::new(),
        shell: None,
    };
    ContainerEnv::build(&host, &opts).unwrap()
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(shell: &[String], root: &FakeRoot, action: Action, env: &ContainerEnv, args: &[&str]) -> Run {
    let script = ActionScript::new(action, env).with_root(&root.root()).with_level(Level::Info);
    let argv = script.argv(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    assert_eq!(argv[0], "/bin/sh");
    assert_eq!(argv[1], "-c");
    assert_eq!(argv[3], "strata");
    let out = Command::new(&shell[0])
        .args(&shell[1..])
        .args(&argv[1..])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v.value.as_str())))
        .current_dir(root.root())
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `env` output as a map.
fn env_map(stdout: &str) -> BTreeMap<String, String> {
    stdout.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

const HOST: &[(&str, &str)] =
    &[("HOSTVAR", "from-host"), ("HOST_ONLY", "kept"), ("TERM", "xterm"), ("PATH", "/host/bin")];

#[test]
fn scripts_are_sourced_in_order_with_host_and_user_values_hidden() {
    for shell in shells() {
        let root = FakeRoot::new();
        for name in [
            "01-base.sh",
            "10-docker2singularity.sh",
            "90-environment.sh",
            "94-appsbase.sh",
            "99-runtimevars.sh",
        ] {
            root.env_script(name, "");
        }
        root.env_script("99-base.sh", "PS1='Singularity> '; export PS1");
        // Not a *.sh script: never sourced.
        root.file(".singularity.d/env/README", "echo README >> /dev/null\n");
        let env = env_with(HOST, &["USERVAR=from-user"], Action::Exec);
        let r = run(&shell, &root, Action::Exec, &env, &["/usr/bin/env"]);
        assert_eq!(r.code, 0, "{shell:?}: {}", r.stderr);
        let lines: Vec<String> = root.trace().lines().map(str::to_string).collect();
        let names: Vec<&str> = lines.iter().map(|l| l.split(' ').next().unwrap()).collect();
        assert_eq!(
            names,
            [
                "01-base.sh",
                "10-docker2singularity.sh",
                "90-environment.sh",
                "94-appsbase.sh",
                "99-base.sh",
                "99-runtimevars.sh"
            ],
            "{shell:?}"
        );
        // Host and user values are hidden from the scripts; runtime values are visible;
        // PATH is unset until the docker script's PATH fix.
        assert_eq!(lines[0], "01-base.sh host=unset user=unset name=test.sif path=unset", "{shell:?}");
        assert!(lines[2].ends_with(&format!("path={DEFAULT_PATH}")), "{shell:?}");
        // After 99-base.sh the user's values are back (99-runtimevars.sh sees them).
        assert!(lines[5].contains("user=from-user"), "{shell:?}: {}", lines[5]);
        assert!(lines[5].contains("host=unset"), "{shell:?}: {}", lines[5]);

        let vars = env_map(&r.stdout);
        assert_eq!(vars["HOSTVAR"], "from-host", "{shell:?}");
        assert_eq!(vars["USERVAR"], "from-user", "{shell:?}");
        assert_eq!(vars["HOST_ONLY"], "kept", "{shell:?}");
        assert_eq!(vars["PATH"], DEFAULT_PATH, "{shell:?}");
        assert_eq!(vars["HOME"], "/home/alice", "{shell:?}");
        assert_eq!(vars["PS1"], "Strata> ", "{shell:?}");
        assert_eq!(vars["APPTAINER_COMMAND"], "exec", "{shell:?}");
        assert_eq!(vars["APPTAINER_ENVIRONMENT"], "/.singularity.d/env/91-environment.sh");
        assert!(!vars.keys().any(|k| k.starts_with("__strata")), "{shell:?}: private variables leaked");
    }
}

#[test]
fn user_values_win_over_the_image_and_the_image_over_the_host() {
    for shell in shells() {
        let root = FakeRoot::new();
        root.env_script(
            "90-environment.sh",
            "export USERVAR=from-image HOSTVAR=from-image IMAGEVAR=image PS1='image> '\n\
             export PATH=/image/bin:$PATH",
        );
        root.env_script("99-base.sh", "");
        let env = env_with(HOST, &["USERVAR=from-user"], Action::Exec);
        let r = run(&shell, &root, Action::Exec, &env, &["/usr/bin/env"]);
        assert_eq!(r.code, 0, "{shell:?}: {}", r.stderr);
        let vars = env_map(&r.stdout);
        assert_eq!(vars["USERVAR"], "from-user", "{shell:?}");
        assert_eq!(vars["HOSTVAR"], "from-image", "{shell:?}");
        assert_eq!(vars["IMAGEVAR"], "image", "{shell:?}");
        assert_eq!(vars["HOST_ONLY"], "kept", "{shell:?}");
        // The image's own prompt is kept; its PATH built on the fixed default.
        assert_eq!(vars["PS1"], "image> ", "{shell:?}");
        assert_eq!(vars["PATH"], format!("/image/bin:{DEFAULT_PATH}"), "{shell:?}");
    }
}

#[test]
fn user_values_are_applied_even_without_99_base_and_path_overrides_once() {
    for shell in shells() {
        let root = FakeRoot::new();
        root.env_script("90-environment.sh", "export USERVAR=from-image");
        let env = env_with(
            &[("APPTAINERENV_PREPEND_PATH", "/pre"), ("HOSTVAR", "h")],
            &["USERVAR=from-user", "APPEND_PATH=/post"],
            Action::Exec,
        );
        let r = run(&shell, &root, Action::Exec, &env, &["/usr/bin/env"]);
        assert_eq!(r.code, 0, "{shell:?}: {}", r.stderr);
        let vars = env_map(&r.stdout);
        assert_eq!(vars["USERVAR"], "from-user", "{shell:?}");
        assert_eq!(vars["PATH"], format!("/pre:{DEFAULT_PATH}:/post"), "{shell:?}");
        assert!(!vars.contains_key("SING_USER_DEFINED_PREPEND_PATH"));

        // With the image's own 99-runtimevars.sh (which applies and unsets them), once only.
        root.file(
            ".singularity.d/env/99-runtimevars.sh",
            "if [ -n \"${SING_USER_DEFINED_PREPEND_PATH:-}\" ]; then \
             PATH=\"${SING_USER_DEFINED_PREPEND_PATH}:${PATH}\"; fi\n\
             unset SING_USER_DEFINED_PREPEND_PATH SING_USER_DEFINED_APPEND_PATH \
             SING_USER_DEFINED_PATH\nexport PATH\n",
        );
        let r = run(&shell, &root, Action::Exec, &env, &["/usr/bin/env"]);
        let vars = env_map(&r.stdout);
        assert_eq!(vars["PATH"], format!("/pre:{DEFAULT_PATH}"), "{shell:?}");

        // --env PATH replaces PATH altogether.
        std::fs::remove_file(root.root().join(".singularity.d/env/99-runtimevars.sh")).unwrap();
        let env = env_with(&[], &["PATH=/only/here"], Action::Exec);
        let r = run(&shell, &root, Action::Exec, &env, &["/usr/bin/env"]);
        assert_eq!(env_map(&r.stdout)["PATH"], "/only/here", "{shell:?}");
    }
}

#[test]
fn legacy_images_source_slash_environment() {
    for shell in shells() {
        let root = FakeRoot::new();
        root.file("environment", "LEGACY=yes; export LEGACY\n");
        let env = env_with(HOST, &[], Action::Exec);
        let r = run(&shell, &root, Action::Exec, &env, &["/usr/bin/env"]);
        assert_eq!(r.code, 0, "{shell:?}: {}", r.stderr);
        let vars = env_map(&r.stdout);
        assert_eq!(vars["LEGACY"], "yes", "{shell:?}");
        assert_eq!(vars["PATH"], DEFAULT_PATH, "{shell:?}");
    }
}

#[test]
fn exec_passes_arguments_verbatim_and_fails_like_apptainer() {
    for shell in shells() {
        let root = FakeRoot::new();
        root.probe("bin/probe", "probe");
        let env = env_with(HOST, &[], Action::Exec);
        let probe = root.root().join("bin/probe");
        let args = [probe.to_str().unwrap(), "two words", "$HOME", "'quoted'", "", "*"];
        let r = run(&shell, &root, Action::Exec, &env, &args);
        assert_eq!(r.code, 0, "{shell:?}: {}", r.stderr);
        assert_eq!(
            r.stdout.lines().take(6).collect::<Vec<_>>(),
            ["probe", "arg=two words", "arg=$HOME", "arg='quoted'", "arg=", "arg=*"],
            "{shell:?}"
        );

        let r = run(&shell, &root, Action::Exec, &env, &["no-such-command", "x"]);
        assert_eq!(r.code, 255, "{shell:?}");
        assert_eq!(
            r.stderr, "FATAL:   \"no-such-command\": executable file not found in $PATH\n",
            "{shell:?}"
        );

        // The payload's exit code is the script's.
        let r = run(&shell, &root, Action::Exec, &env, &["/bin/sh", "-c", "exit 42"]);
        assert_eq!(r.code, 42, "{shell:?}");
    }
}

#[test]
fn run_uses_the_runscript_then_sh() {
    for shell in shells() {
        let root = FakeRoot::new();
        let env = env_with(HOST, &[], Action::Run);

        // Nothing at all.
        let r = run(&shell, &root, Action::Run, &env, &["a"]);
        assert_eq!(r.code, 1, "{shell:?}");
        assert_eq!(
            r.stderr,
            "ERROR:   No runscript and no /bin/sh executable found in container, aborting\n"
        );

        // /bin/sh only.
        std::fs::create_dir_all(root.root().join("bin")).unwrap();
        std::os::unix::fs::symlink("/bin/sh", root.root().join("bin/sh")).unwrap();
        let r = run(&shell, &root, Action::Run, &env, &["-c", "echo from-sh $0"]);
        assert_eq!(r.code, 0, "{shell:?}: {}", r.stderr);
        assert!(r.stdout.starts_with("from-sh "), "{shell:?}: {}", r.stdout);
        assert_eq!(r.stderr, "INFO:    No runscript found in container, executing /bin/sh\n");
        // Quiet hides the INFO line.
        let script = ActionScript::new(Action::Run, &env).with_root(&root.root()).with_level(Level::Quiet);
        let out = Command::new(&shell[0])
            .args(&shell[1..])
            .args(&script.argv(&["-c".into(), "true".into()])[1..])
            .env_clear()
            .output()
            .unwrap();
        assert!(out.stderr.is_empty(), "{shell:?}");

        // The runscript, with the arguments.
        root.probe(".singularity.d/runscript", "runscript");
        let r = run(&shell, &root, Action::Run, &env, &["x y", "z"]);
        assert_eq!(r.code, 0, "{shell:?}: {}", r.stderr);
        assert!(r.stdout.starts_with("runscript\narg=x y\narg=z\n"), "{shell:?}: {}", r.stdout);
        assert!(r.stderr.is_empty(), "{shell:?}: {}", r.stderr);
    }
}

#[test]
fn test_runs_the_test_script_or_says_there_is_none() {
    for shell in shells() {
        let root = FakeRoot::new();
        let env = env_with(HOST, &[], Action::Test);
        let r = run(&shell, &root, Action::Test, &env, &[]);
        assert_eq!(r.code, 0, "{shell:?}");
        assert_eq!(r.stderr, "INFO:    No test script found in container, exiting\n");
        root.file(".singularity.d/test", "#!/bin/sh\necho testing; exit 3\n");
        let r = run(&shell, &root, Action::Test, &env, &[]);
        assert_eq!((r.code, r.stdout.as_str()), (3, "testing\n"), "{shell:?}");
    }
}

#[test]
fn start_runs_the_startscript_or_exits_quietly() {
    for shell in shells() {
        let root = FakeRoot::new();
        let env = env_with(HOST, &[], Action::Start);
        let r = run(&shell, &root, Action::Start, &env, &[]);
        assert_eq!(r.code, 0, "{shell:?}");
        assert_eq!(r.stderr, "INFO:    No instance start script found in container\n");
        root.probe(".singularity.d/startscript", "start");
        let r = run(&shell, &root, Action::Start, &env, &["arg"]);
        assert!(r.stdout.starts_with("start\narg=arg\n"), "{shell:?}");
    }
}

#[test]
fn shell_prefers_bash_without_rc_files_with_the_strata_prompt() {
    for shell in shells() {
        let root = FakeRoot::new();
        root.env_script("99-base.sh", "PS1='Singularity> '; export PS1");
        let env = env_with(HOST, &[], Action::Shell);

        let r = run(&shell, &root, Action::Shell, &env, &[]);
        assert_eq!(r.code, 1, "{shell:?}");
        assert_eq!(r.stderr, "ERROR:   /bin/sh does not exist in container\n");

        root.probe("bin/sh", "sh");
        let r = run(&shell, &root, Action::Shell, &env, &["-x"]);
        assert_eq!(r.stdout, "sh\narg=-x\nSHELL=/bin/sh\nPS1=Strata> \n", "{shell:?}: {}", r.stderr);

        root.probe("bin/bash", "bash");
        let r = run(&shell, &root, Action::Shell, &env, &[]);
        assert_eq!(r.stdout, "bash\narg=--norc\nSHELL=/bin/bash\nPS1=Strata> \n", "{shell:?}");

        // --shell picks another program.
        root.probe("bin/zsh", "zsh");
        let mut env = env.clone();
        env.insert("APPTAINER_SHELL", "/bin/zsh", VarKind::Runtime);
        let r = run(&shell, &root, Action::Shell, &env, &[]);
        assert!(r.stdout.starts_with("zsh\n"), "{shell:?}: {}", r.stdout);
    }
}

#[test]
fn the_script_text() {
    let env = env_with(HOST, &["USERVAR=u"], Action::Exec);
    let script = ActionScript::new(Action::Exec, &env).script();
    assert!(script.starts_with("# strata exec action script\n__strata_root=''\n"));
    // Names only: no value of any variable is in the script.
    assert!(script.contains("__strata_host='HOSTVAR HOST_ONLY PATH TERM'\n"), "{script}");
    assert!(script.contains("__strata_user='USERVAR'\n"));
    assert!(!script.contains("from-host"));
    assert!(script.ends_with("exec \"$__strata_cmd\" \"$@\"\n"));
    assert!(script.contains("\"$__strata_root\"/.singularity.d/env/*.sh"));

    let argv = ActionScript::new(Action::Run, &env).argv(&["a".into(), "b".into()]);
    assert_eq!(argv.len(), 6);
    assert_eq!(argv[..2], ["/bin/sh", "-c"]);
    assert_eq!(argv[3..], ["strata", "a", "b"]);

    assert_eq!(sh_quote("it's"), r"'it'\''s'");
    assert_eq!(Action::Shell.name(), "shell");
}

#[test]
fn variables_with_shell_unfriendly_names_or_values_pass_untouched() {
    for shell in shells() {
        if shell[0].contains("busybox") || shell[0].ends_with("/sh") {
            // dash and busybox drop environment entries whose names are not shell names.
            continue;
        }
        let root = FakeRoot::new();
        let env = env_with(&[("BASH_FUNC_module%%", "() { echo m; }"), ("NL", "a\nb")], &[], Action::Exec);
        let r = run(&shell, &root, Action::Exec, &env, &["/usr/bin/env"]);
        assert_eq!(r.code, 0, "{shell:?}: {}", r.stderr);
        assert!(r.stdout.contains("NL=a\nb\n"), "{shell:?}");
    }
    // Values with quotes, dollars and newlines survive every shell.
    for shell in shells() {
        let root = FakeRoot::new();
        let tricky = "a'b\"c $HOME `id` \\n\nline2";
        let env = env_with(&[("TRICKY", tricky)], &["UTRICKY=$(id)'\""], Action::Exec);
        let r = run(
            &shell,
            &root,
            Action::Exec,
            &env,
            &["/bin/sh", "-c", "printf '%s|%s' \"$TRICKY\" \"$UTRICKY\""],
        );
        assert_eq!(r.code, 0, "{shell:?}: {}", r.stderr);
        assert_eq!(r.stdout, format!("{tricky}|$(id)'\""), "{shell:?}");
    }
}

#[test]
fn the_busybox_images_own_scripts_and_runscript() {
    let shared = match crate::testutil::shared_dir() {
        Ok(d) => d,
        Err(why) => crate::testutil::skip!("{why}"),
    };
    let Some(unsquashfs) = crate::testutil::tool("unsquashfs") else {
        crate::testutil::skip!("unsquashfs not installed (apt-get install squashfs-tools)")
    };
    let sif = shared.join("testdata/apptainer/busybox_amd64.sif");
    let image = match crate::image::Image::open(&sif, false) {
        Ok(image) => image,
        Err(e) => crate::testutil::skip!("{e}"),
    };
    let rootfs = *image.rootfs().unwrap();
    let root = FakeRoot::new();
    let dest = root.root().join("img");
    crate::testutil::run(
        Command::new(unsquashfs)
            .arg("-q")
            .arg("-o")
            .arg(rootfs.offset.to_string())
            .arg("-d")
            .arg(&dest)
            .arg(&sif)
            .arg(".singularity.d"),
    );
    for shell in shells() {
        let env = env_with(HOST, &["USERVAR=u"], Action::Exec);
        let script = ActionScript::new(Action::Exec, &env).with_root(&dest);
        let out = Command::new(&shell[0])
            .args(&shell[1..])
            .args(&script.argv(&["/usr/bin/env".into()])[1..])
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v.value.as_str())))
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell:?}: {}", String::from_utf8_lossy(&out.stderr));
        let vars = env_map(&String::from_utf8_lossy(&out.stdout));
        // 99-base.sh's prompt becomes strata's; its LD_LIBRARY_PATH is kept.
        assert_eq!(vars["PS1"], "Strata> ", "{shell:?}");
        assert_eq!(vars["LD_LIBRARY_PATH"], "/.singularity.d/libs", "{shell:?}");
        assert_eq!(vars["PATH"], DEFAULT_PATH, "{shell:?}");
        assert_eq!(vars["USERVAR"], "u", "{shell:?}");
        assert_eq!(vars["HOSTVAR"], "from-host", "{shell:?}");

        // The docker-style runscript: arguments replace the image's CMD.
        let env = env_with(HOST, &[], Action::Run);
        let script = ActionScript::new(Action::Run, &env).with_root(&dest);
        let out = Command::new(&shell[0])
            .args(&shell[1..])
            .args(&script.argv(&["echo".into(), "hello from".into(), "busybox".into()])[1..])
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v.value.as_str())))
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from busybox\n");
    }
}

#[test]
fn payload_candidates_follow_the_action() {
    let candidates = |action: Action, args: &[&str]| {
        let env = env_with(&[], &[], action);
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        ActionScript::new(action, &env).payload_candidates(&args)
    };
    assert_eq!(candidates(Action::Exec, &["/opt/tool", "x"]), ["/opt/tool"]);
    assert_eq!(
        candidates(Action::Exec, &["python3"]),
        DEFAULT_PATH.split(':').map(|d| format!("{d}/python3")).collect::<Vec<_>>()
    );
    // Relative paths depend on the cwd, and '.'/'..' are not sent at all (the plan refuses them).
    assert!(candidates(Action::Exec, &["./run.sh"]).is_empty());
    assert!(candidates(Action::Exec, &["/opt/../bin/true"]).is_empty());
    assert!(candidates(Action::Exec, &["../x"]).is_empty());
    assert!(candidates(Action::Exec, &[]).is_empty());
    assert_eq!(candidates(Action::Shell, &[]), ["/bin/bash", "/bin/sh"]);
    for action in [Action::Run, Action::Test, Action::Start] {
        assert_eq!(candidates(action, &["arg"]), ["/bin/sh"]);
    }
}
