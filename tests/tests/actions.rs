//! `strata exec|run|shell|test` through the setuid starter, as unprivileged users (one with
//! ids above 65535): what the payload runs, who it runs as, what it sees of the host (home,
//! /tmp, /dev, binds, environment, processes), and what the user reads when it fails.
//!
//! Tests of what Apptainer's `busybox_amd64.sif` itself does (its runscript, env scripts, no test
//! script) need it in the shared test data and are skipped with a printed reason without it.
//! Tests of behaviour that does not depend on the image use it when it is there, else the
//! busybox squashfs built at test time. The fixture tests run every action on the busybox
//! images built at test time (sandbox directory, bare squashfs, ext3).

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::{both_users, busybox_image, make_sif, reference_sif, ARCH_AMD64, ARCH_ARM64};
use strata_e2e::{argv, busybox, Install, Output, RunOpts, TestDir, TestUser, RUNSCRIPT_OUTPUT, TEST_OUTPUT};

/// What a user reads when the command is not in the container.
fn not_found(command: &str) -> String {
    format!("FATAL:   \"{command}\": executable file not found in $PATH\n")
}

/// Panics unless the command exited 0 and printed exactly `stdout` and nothing on stderr.
#[track_caller]
fn assert_prints(out: &Output, stdout: &str) {
    out.assert_success();
    assert_eq!(out.stdout, stdout, "stdout differs:\n{out}");
    assert_eq!(out.stderr, "", "stderr should be empty:\n{out}");
}

/// `strata ARGS...` as `user`, no stdin, default environment.
fn strata(install: &Install, user: &TestUser, args: &[std::ffi::OsString]) -> Output {
    install.strata_as(user, args, &RunOpts::new())
}

// ---------------------------------------------------------------------------------------------
// The actions on Apptainer's busybox image

#[test]
fn exec_runs_the_command_in_the_image() {
    let (Some(install), Some(users), Some(sif)) = (Install::shared(), both_users(), reference_sif()) else {
        return;
    };
    for user in users {
        let out = strata(install, user, &argv!["exec", &sif, "echo", "hello"]);
        assert_prints(&out, "hello\n");
        // Arguments arrive as they were given, spaces and quotes included.
        let out = strata(install, user, &argv!["exec", &sif, "printf", "[%s]", "a b", "'c'", "", "$HOME"]);
        assert_prints(&out, "[a b]['c'][][$HOME]");
    }
}

/// busybox_amd64.sif was built from `docker://busybox`: its runscript runs the OCI CMD (`sh`)
/// without arguments and the arguments as a command otherwise.
#[test]
fn run_passes_the_arguments_to_the_runscript() {
    let (Some(install), Some(users), Some(sif)) = (Install::shared(), both_users(), reference_sif()) else {
        return;
    };
    for user in users {
        let out = strata(install, user, &argv!["run", &sif, "echo", "hello", "world"]);
        assert_prints(&out, "hello world\n");
        let out = strata(install, user, &argv!["run", &sif, "sh", "-c", "exit 7"]);
        out.assert_code(7);
    }
}

#[test]
fn run_without_arguments_runs_the_images_default_command() {
    let (Some(install), Some(users), Some(sif)) = (Install::shared(), both_users(), reference_sif()) else {
        return;
    };
    for user in users {
        let out = install.strata_as(
            user,
            &argv!["run", &sif],
            &RunOpts::new().stdin("echo \"default command as $(id -un)\"\n"),
        );
        assert_prints(&out, &format!("default command as {}\n", user.name));
    }
}

#[test]
fn shell_reads_commands_from_stdin_with_the_strata_prompt() {
    let (Some(install), Some(users), Some(sif)) = (Install::shared(), both_users(), reference_sif()) else {
        return;
    };
    for user in users {
        // The image's 99-base.sh sets PS1="Singularity> "; strata shows its own prompt.
        let out = install.strata_as(
            user,
            &argv!["shell", &sif],
            &RunOpts::new().stdin("echo \"[$PS1]\"\necho \"$SHELL\"\nid -u\nexit 3\n"),
        );
        out.assert_code(3);
        assert_eq!(out.stdout, format!("[Strata> ]\n/bin/sh\n{}\n", user.uid), "{out}");
        assert_eq!(out.stderr, "", "{out}");
    }
}

#[test]
fn test_of_an_image_without_a_test_script_says_so_and_succeeds() {
    let (Some(install), Some(users), Some(sif)) = (Install::shared(), both_users(), reference_sif()) else {
        return;
    };
    for user in users {
        let out = strata(install, user, &argv!["test", &sif]);
        out.assert_success();
        assert_eq!(out.stdout, "", "{out}");
        assert_eq!(out.stderr, "INFO:    No test script found in container, exiting\n", "{out}");
        // -q silences the INFO line.
        let out = strata(install, user, &argv!["-q", "test", &sif]);
        assert_prints(&out, "");
    }
}

#[test]
fn the_payloads_exit_code_comes_back() {
    let (Some(install), Some(users), Some(sif)) = (Install::shared(), both_users(), busybox_image()) else {
        return;
    };
    for user in users {
        for pid_ns in [false, true] {
            for code in [0, 7, 255] {
                let mut args = argv!["exec"];
                if pid_ns {
                    args.push("--pid".into());
                }
                args.extend(argv![&sif, "sh", "-c", format!("exit {code}")]);
                let out = strata(install, user, &args);
                out.assert_code(code);
                assert_eq!(out.stderr, "", "{out}");
            }
            // A payload killed by a signal: 128 + the signal, as a shell reports it.
            let mut args = argv!["exec"];
            if pid_ns {
                args.push("--pid".into());
            }
            args.extend(argv![&sif, "sh", "-c", "kill -TERM $$"]);
            let out = strata(install, user, &args);
            assert_eq!(out.code, 128 + libc::SIGTERM, "{out}");
        }
    }
}

#[test]
fn a_missing_command_is_fatal_with_code_255() {
    let (Some(install), Some(users), Some(sif)) = (Install::shared(), both_users(), busybox_image()) else {
        return;
    };
    for user in users {
        let out = strata(install, user, &argv!["exec", &sif, "no-such-command", "x"]);
        out.assert_code(255);
        assert_eq!(out.stdout, "", "{out}");
        assert_eq!(out.stderr, not_found("no-such-command"), "{out}");
        // A path that does not exist is the same failure.
        let out = strata(install, user, &argv!["exec", &sif, "/opt/nothing/here"]);
        out.assert_code(255);
        assert_eq!(out.stderr, not_found("/opt/nothing/here"), "{out}");
    }
}

// ---------------------------------------------------------------------------------------------
// The same on the images built at test time

/// Every action on one of the busybox fixtures, for both users.
fn every_action_works_on(image: &Path) {
    let (Some(install), Some(users)) = (Install::shared(), both_users()) else {
        return;
    };
    for user in users {
        let out = strata(install, user, &argv!["exec", image, "echo", "hello"]);
        assert_prints(&out, "hello\n");
        let out = strata(install, user, &argv!["exec", image, "id", "-u"]);
        assert_prints(&out, &format!("{}\n", user.uid));
        // The image's /.singularity.d/env/90-environment.sh exports FIXTURE=busybox.
        let out = strata(install, user, &argv!["exec", image, "sh", "-c", "echo $FIXTURE"]);
        assert_prints(&out, "busybox\n");
        for code in [0, 7, 255] {
            strata(install, user, &argv!["exec", image, "sh", "-c", format!("exit {code}")])
                .assert_code(code);
        }
        let out = strata(install, user, &argv!["exec", image, "no-such-command"]);
        out.assert_code(255);
        assert_eq!(out.stderr, not_found("no-such-command"), "{out}");

        let out = strata(install, user, &argv!["run", image, "a", "b c"]);
        assert_prints(&out, &format!("{RUNSCRIPT_OUTPUT} a b c\n"));
        let out = strata(install, user, &argv!["test", image]);
        assert_prints(&out, &format!("{TEST_OUTPUT}\n"));
        let out = install.strata_as(
            user,
            &argv!["shell", image],
            &RunOpts::new().stdin("echo \"$FIXTURE $SHELL\"\nexit 4\n"),
        );
        out.assert_code(4);
        assert_eq!(out.stdout, "busybox /bin/sh\n", "{out}");
    }
}

#[test]
fn every_action_works_on_a_sandbox_directory() {
    if let Some(images) = busybox() {
        every_action_works_on(&images.sandbox);
    }
}

/// `--writable` on a sandbox directory the user owns: changes go straight into it.
#[test]
fn writable_sandbox_owned_by_the_user_keeps_changes() {
    let (Some(install), Some(users), Some(images)) = (Install::shared(), both_users(), busybox()) else {
        return;
    };
    for user in users {
        let dir = TestDir::owned_by(user).unwrap();
        let sandbox = dir.copy_in(&images.sandbox, "sandbox");
        let out = strata(
            install,
            user,
            &argv!["exec", "--writable", &sandbox, "sh", "-c", "echo kept > /opt/note"],
        );
        // No overlay means no stub for missing mount points: the home bind is skipped, said.
        out.assert_success();
        assert_eq!(out.stdout, "", "{out}");
        out.assert_stderr_contains(&format!(
            "WARNING: skipping mount of /home/{}: it does not exist in the container",
            user.name
        ));
        assert_eq!(fs::read_to_string(sandbox.join("opt/note")).unwrap(), "kept\n");
    }
}

/// The fixture's env scripts set no PS1 (unlike Apptainer's 99-base.sh): the prompt must still
/// be strata's, not the default of the shell that runs the action script.
#[test]
fn shell_prompt_is_strata_on_an_image_that_sets_none() {
    let (Some(install), Some(users), Some(images)) = (Install::shared(), both_users(), busybox()) else {
        return;
    };
    for user in users {
        let out = install.strata_as(
            user,
            &argv!["shell", &images.squashfs],
            &RunOpts::new().stdin("echo \"[$PS1]\"\n"),
        );
        assert_prints(&out, "[Strata> ]\n");
    }
}

#[test]
fn every_action_works_on_a_bare_squashfs_image() {
    if let Some(images) = busybox() {
        every_action_works_on(&images.squashfs);
    }
}

#[test]
fn every_action_works_on_an_ext3_image() {
    if let Some(images) = busybox() {
        every_action_works_on(&images.ext3);
    }
}

// ---------------------------------------------------------------------------------------------
// Identity

#[test]
fn the_container_runs_as_the_user_with_their_groups_and_passwd_entry() {
    let (Some(install), Some(users), Some(sif), Some((group, shared_gid))) =
        (Install::shared(), both_users(), busybox_image(), TestUser::shared_group())
    else {
        return;
    };
    for user in users {
        let out = strata(
            install,
            user,
            &argv![
                "exec",
                &sif,
                "sh",
                "-c",
                "id -u; id -g; id -un; id -G; grep \"^$(id -un):\" /etc/passwd; \
                 grep '^root:' /etc/passwd; cat /etc/group; \
                 grep -E '^(Uid|Gid|Groups|CapEff|NoNewPrivs):' /proc/self/status"
            ],
        );
        out.assert_success();
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(lines[0], user.uid.to_string(), "{out}");
        assert_eq!(lines[1], user.gid.to_string(), "{out}");
        assert_eq!(lines[2], user.name, "{out}");
        let mut groups: Vec<u32> = lines[3]
            .split(' ')
            .map(|g| g.parse().unwrap_or_else(|_| panic!("bad gid {g:?}:\n{out}")))
            .collect();
        groups.sort_unstable();
        let mut want = user.groups.clone();
        want.sort_unstable();
        assert_eq!(groups, want, "supplementary groups are kept:\n{out}");
        assert!(groups.contains(&shared_gid), "{out}");
        let passwd = lines[4];
        assert!(
            passwd.starts_with(&format!("{}:x:{}:{}:", user.name, user.uid, user.gid))
                && passwd.ends_with(&format!(":{}:/bin/sh", user.home.display())),
            "the user's /etc/passwd line: {passwd:?}\n{out}"
        );
        assert_eq!(lines[5], "root:x:0:0:root:/root:/bin/sh", "image's own lines stay");
        assert!(
            lines.iter().any(|l| l.starts_with(&format!("{group}:x:{shared_gid}:"))
                && l.split(':').nth(3).unwrap_or("").split(',').any(|m| m == user.name)),
            "/etc/group lists the shared group with the user:\n{out}"
        );
        let ids = |what: &str, id: u32| format!("{what}:\t{id}\t{id}\t{id}\t{id}");
        assert!(out.stdout.contains(&ids("Uid", user.uid)), "{out}");
        assert!(out.stdout.contains(&ids("Gid", user.gid)), "{out}");
        assert!(out.stdout.contains("CapEff:\t0000000000000000"), "no capability survives:\n{out}");
        assert!(out.stdout.contains("NoNewPrivs:\t1"), "{out}");
    }
}

// ---------------------------------------------------------------------------------------------
// Home, /tmp, /dev

#[test]
fn contain_gives_an_empty_private_home_a_fresh_tmp_and_a_minimal_dev() {
    let (Some(install), Some(users), Some(sif)) = (Install::shared(), both_users(), busybox_image()) else {
        return;
    };
    let marker = format!("strata-e2e-contain-{}", std::process::id());
    for user in users {
        // Things on the host that a contained container must not see.
        let host_note = user.home.join(&marker);
        fs::write(&host_note, "host").unwrap();
        let host_tmp = TestDir::owned_by(user).unwrap();
        let script = format!(
            "echo \"home=[$(ls -A \"$HOME\")]\"; stat -c '%u:%g:%a' \"$HOME\"; \
             awk -v h=\"$HOME\" '$2 == h {{ print $3 }}' /proc/mounts; \
             echo written > \"$HOME/{marker}.inside\" && cat \"$HOME/{marker}.inside\"; \
             echo \"tmp=[$(ls -A /tmp)]\"; touch /tmp/x && echo tmp-writable; \
             test -e {tmp} || echo no-host-tmp; \
             ls /dev | tr '\\n' ' '; echo; pwd; echo ok > /dev/null && echo null-writable",
            tmp = host_tmp.path().display()
        );
        let out = strata(install, user, &argv!["exec", "--contain", &sif, "sh", "-c", script]);
        let _ = fs::remove_file(&host_note);
        out.assert_success();
        let want = format!(
            "home=[]\n{uid}:{gid}:700\ntmpfs\nwritten\ntmp=[]\ntmp-writable\nno-host-tmp\n\
             fd full null ptmx pts random shm stderr stdin stdout tty urandom zero \n\
             {home}\nnull-writable\n",
            uid = user.uid,
            gid = user.gid,
            home = user.home.display()
        );
        assert_eq!(out.stdout, want, "{out}");
        assert_eq!(out.stderr, "", "{out}");
        assert!(
            !user.home.join(format!("{marker}.inside")).exists(),
            "a file written in the contained home reached the host"
        );
    }
}

#[test]
fn without_contain_the_host_home_is_bound_and_writes_persist() {
    let (Some(install), Some(users), Some(sif)) = (Install::shared(), both_users(), busybox_image()) else {
        return;
    };
    let name = format!("strata-e2e-home-{}", std::process::id());
    for user in users {
        let note = user.home.join(&name);
        let _ = fs::remove_file(&note);
        let out = strata(
            install,
            user,
            &argv![
                "exec",
                &sif,
                "sh",
                "-c",
                format!("echo \"$HOME\"; pwd; echo persisted > \"$HOME/{name}\"")
            ],
        );
        assert_prints(&out, &format!("{0}\n{0}\n", user.home.display()));
        let written = fs::read_to_string(&note);
        let meta = fs::metadata(&note);
        let _ = fs::remove_file(&note);
        assert_eq!(written.unwrap(), "persisted\n");
        let meta = meta.unwrap();
        assert_eq!((meta.uid(), meta.gid()), (user.uid, user.gid));
    }
}

#[test]
fn home_flag_binds_another_directory_as_the_home() {
    let (Some(install), Some(users), Some(sif)) = (Install::shared(), both_users(), busybox_image()) else {
        return;
    };
    let script = "echo \"$HOME\"; grep \"^$(id -un):\" /etc/passwd | cut -d: -f6; \
                  cat \"$HOME/data\"; touch \"$HOME/made\"";
    for user in users {
        let home = bind_source(user);
        for (spec, dest) in [
            (format!("{}:/home/elsewhere", home.path().display()), "/home/elsewhere".into()),
            (home.path().display().to_string(), home.path().display().to_string()),
        ] {
            let out = strata(install, user, &argv!["exec", "-H", spec, &sif, "sh", "-c", script]);
            assert_prints(&out, &format!("{dest}\n{dest}\n{}\n", user.name));
            assert!(home.join("made").exists(), "{out}");
            fs::remove_file(home.join("made")).unwrap();
        }
    }
}

#[test]
fn containall_contains_files_processes_ipc_and_environment() {
    let (Some(install), Some(users), Some(sif)) = (Install::shared(), both_users(), busybox_image()) else {
        return;
    };
    let host_ipc = fs::read_link("/proc/self/ns/ipc").unwrap();
    let opts = RunOpts::new().env("E2E_HOST_VARIABLE", "1");
    let script = "echo \"${E2E_HOST_VARIABLE-unset} $$ [$(ls -A ~)] $(ls /dev | wc -l)\"; \
                  readlink /proc/self/ns/ipc";
    for user in users {
        for flag in ["--containall", "-C"] {
            let out = install.strata_as(user, &argv!["exec", flag, &sif, "sh", "-c", script], &opts);
            out.assert_success();
            let lines: Vec<&str> = out.stdout.lines().collect();
            assert_eq!(lines[0], "unset 2 [] 13", "{out}");
            assert_ne!(Path::new(lines[1]), host_ipc, "a new IPC namespace:\n{out}");
            assert_eq!(out.stderr, "", "{out}");
        }
    }
}

#[test]
fn ipc_and_uts_flags_give_new_namespaces() {
    let (Some(install), Some(user), Some(sif)) = (Install::shared(), TestUser::high(), busybox_image())
    else {
        return;
    };
    for (flag, ns) in [("--ipc", "ipc"), ("-i", "ipc"), ("--uts", "uts")] {
        let link = format!("/proc/self/ns/{ns}");
        let host = fs::read_link(&link).unwrap();
        let out = strata(install, user, &argv!["exec", flag, &sif, "readlink", &link]);
        out.assert_success();
        assert_ne!(Path::new(out.stdout.trim()), host, "{flag}:\n{out}");
        let out = strata(install, user, &argv!["exec", &sif, "readlink", &link]);
        assert_prints(&out, &format!("{}\n", host.display()));
    }
}

// ---------------------------------------------------------------------------------------------
// Binds

/// A directory owned by `user` holding `data` = "<name>\n".
fn bind_source(user: &TestUser) -> TestDir {
    let dir = TestDir::owned_by(user).unwrap();
    dir.write("data", format!("{}\n", user.name), 0o644);
    dir
}

#[test]
fn bind_shows_a_host_directory_and_writes_reach_the_host() {
    let (Some(install), Some(users), Some(sif)) = (Install::shared(), both_users(), busybox_image()) else {
        return;
    };
    for user in users {
        let src = bind_source(user);
        let spec = format!("{}:/mnt/src", src.path().display());
        let out = strata(
            install,
            user,
            &argv!["exec", "-B", spec, &sif, "sh", "-c", "cat /mnt/src/data && echo new > /mnt/src/new"],
        );
        assert_prints(&out, &format!("{}\n", user.name));
        assert_eq!(fs::read_to_string(src.join("new")).unwrap(), "new\n");
        let meta = fs::metadata(src.join("new")).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (user.uid, user.gid));
        // --bind is the same flag; src alone binds at the same path.
        let out = strata(install, user, &argv!["exec", "--bind", src.path(), &sif, "cat", src.join("data")]);
        assert_prints(&out, &format!("{}\n", user.name));
    }
}

#[test]
fn read_only_bind_refuses_writes() {
    let (Some(install), Some(users), Some(sif)) = (Install::shared(), both_users(), busybox_image()) else {
        return;
    };
    for user in users {
        let src = bind_source(user);
        let spec = format!("{}:/mnt/src:ro", src.path().display());
        let out = strata(install, user, &argv!["exec", "-B", spec, &sif, "touch", "/mnt/src/new"]);
        out.assert_code(1);
        assert_eq!(out.stderr, "touch: /mnt/src/new: Read-only file system\n", "{out}");
        assert!(!src.join("new").exists());
        let out = strata(
            install,
            user,
            &argv![
                "exec",
                "-B",
                format!("{}:/mnt/src:ro", src.path().display()),
                &sif,
                "cat",
                "/mnt/src/data"
            ],
        );
        assert_prints(&out, &format!("{}\n", user.name));
    }
}

#[test]
fn comma_separated_binds_are_all_mounted() {
    let (Some(install), Some(users), Some(sif)) = (Install::shared(), both_users(), busybox_image()) else {
        return;
    };
    for user in users {
        let a = bind_source(user);
        let b = bind_source(user);
        let spec = format!("{}:/mnt/a,{}:/opt/b:ro", a.path().display(), b.path().display());
        let out = strata(
            install,
            user,
            &argv![
                "exec",
                "-B",
                spec,
                &sif,
                "sh",
                "-c",
                "cat /mnt/a/data /opt/b/data; touch /mnt/a/w && echo a-rw; \
                 touch /opt/b/w 2>/dev/null || echo b-ro"
            ],
        );
        assert_prints(&out, &format!("{0}\n{0}\na-rw\nb-ro\n", user.name));
    }
}

#[test]
fn apptainer_and_singularity_bind_variables_add_binds() {
    let (Some(install), Some(users), Some(sif)) = (Install::shared(), both_users(), busybox_image()) else {
        return;
    };
    for user in users {
        let src = bind_source(user);
        for var in ["APPTAINER_BIND", "SINGULARITY_BIND"] {
            let opts = RunOpts::new().env(var, format!("{}:/mnt/env", src.path().display()));
            let out = install.strata_as(user, &argv!["exec", &sif, "cat", "/mnt/env/data"], &opts);
            assert_prints(&out, &format!("{}\n", user.name));
        }
        // The variable and -B together: both binds.
        let other = bind_source(user);
        let opts = RunOpts::new().env("APPTAINER_BIND", format!("{}:/mnt/env", src.path().display()));
        let out = install.strata_as(
            user,
            &argv![
                "exec",
                "-B",
                format!("{}:/mnt/flag", other.path().display()),
                &sif,
                "cat",
                "/mnt/env/data",
                "/mnt/flag/data"
            ],
            &opts,
        );
        assert_prints(&out, &format!("{0}\n{0}\n", user.name));
    }
}

#[test]
fn bind_of_a_missing_source_is_fatal() {
    let (Some(install), Some(users), Some(sif)) = (Install::shared(), both_users(), busybox_image()) else {
        return;
    };
    for user in users {
        let dir = TestDir::owned_by(user).unwrap();
        let missing = dir.join("not-there");
        let out =
            strata(install, user, &argv!["exec", "-B", format!("{}:/mnt", missing.display()), &sif, "true"]);
        out.assert_code(255);
        assert_eq!(out.stdout, "", "{out}");
        assert_eq!(
            out.stderr,
            format!("FATAL:   mount source {} doesn't exist\n", missing.display()),
            "{out}"
        );
    }
}

#[test]
fn bind_onto_a_path_missing_in_the_image_creates_it() {
    let (Some(install), Some(users), Some(sif)) = (Install::shared(), both_users(), busybox_image()) else {
        return;
    };
    for user in users {
        let src = bind_source(user);
        let file = src.write("single.conf", "one file\n", 0o644);
        let spec =
            format!("{}:/not/in/the/image,{}:/etc/strata-e2e.conf", src.path().display(), file.display());
        let out = strata(
            install,
            user,
            &argv![
                "exec",
                "-B",
                spec,
                &sif,
                "sh",
                "-c",
                "cat /not/in/the/image/data /etc/strata-e2e.conf; ls /not/in/the; \
                 test -f /etc/strata-e2e.conf && echo file; ls /etc | grep -c passwd"
            ],
        );
        assert_prints(&out, &format!("{}\none file\nimage\nfile\n1\n", user.name));
    }
}

// ---------------------------------------------------------------------------------------------
// Environment and working directory

#[test]
fn host_variables_pass_unless_cleanenv() {
    let (Some(install), Some(users), Some(sif)) = (Install::shared(), both_users(), busybox_image()) else {
        return;
    };
    let opts = RunOpts::new().env("E2E_HOST_VARIABLE", "from the host");
    let show = "echo \"[${E2E_HOST_VARIABLE-unset}] [$HOME]\"";
    for user in users {
        let out = install.strata_as(user, &argv!["exec", &sif, "sh", "-c", show], &opts);
        assert_prints(&out, &format!("[from the host] [{}]\n", user.home.display()));
        for flag in ["--cleanenv", "-e"] {
            let out = install.strata_as(user, &argv!["exec", flag, &sif, "sh", "-c", show], &opts);
            assert_prints(&out, &format!("[unset] [{}]\n", user.home.display()));
        }
    }
}

#[test]
fn env_flag_sets_variables_over_the_hosts() {
    let (Some(install), Some(users), Some(sif)) = (Install::shared(), both_users(), busybox_image()) else {
        return;
    };
    let opts = RunOpts::new().env("A", "host");
    for user in users {
        let out = install.strata_as(
            user,
            &argv!["exec", "--env", "A=1", "--env", "B=2,C=x y", &sif, "sh", "-c", "echo \"$A|$B|$C\""],
            &opts,
        );
        assert_prints(&out, "1|2|x y\n");
        // Also with --cleanenv.
        let out = install.strata_as(
            user,
            &argv!["exec", "-e", "--env", "A=1", &sif, "sh", "-c", "echo \"$A\""],
            &opts,
        );
        assert_prints(&out, "1\n");
    }
}

#[test]
fn env_file_sets_variables() {
    let (Some(install), Some(users), Some(sif)) = (Install::shared(), both_users(), busybox_image()) else {
        return;
    };
    for user in users {
        let dir = TestDir::owned_by(user).unwrap();
        let file = dir.write("env", "# comment\nFROM_FILE=ff\nexport QUOTED=\"q q\"\n", 0o600);
        let out = strata(
            install,
            user,
            &argv!["exec", "--env-file", &file, &sif, "sh", "-c", "echo \"$FROM_FILE|$QUOTED\""],
        );
        assert_prints(&out, "ff|q q\n");
    }
}

#[test]
fn apptainerenv_and_singularityenv_prefixes_set_variables() {
    let (Some(install), Some(users), Some(sif)) = (Install::shared(), both_users(), busybox_image()) else {
        return;
    };
    let show = argv!["exec", &sif, "sh", "-c", "echo \"X=$X\""];
    for user in users {
        let out = install.strata_as(user, &show, &RunOpts::new().env("APPTAINERENV_X", "a"));
        assert_prints(&out, "X=a\n");
        let out = install.strata_as(user, &show, &RunOpts::new().env("SINGULARITYENV_X", "s"));
        assert_prints(&out, "X=s\n");
        // Both: APPTAINERENV_ wins, as in Apptainer, with its warning.
        let opts = RunOpts::new().env("APPTAINERENV_X", "a").env("SINGULARITYENV_X", "s");
        let out = install.strata_as(user, &show, &opts);
        out.assert_success();
        assert_eq!(out.stdout, "X=a\n", "{out}");
        assert_eq!(
            out.stderr,
            "WARNING: Skipping environment variable [SINGULARITYENV_X=s], X is already \
             overridden with different value [a]\n",
            "{out}"
        );
        // And they survive --cleanenv.
        let out = install.strata_as(
            user,
            &argv!["exec", "-e", &sif, "sh", "-c", "echo \"X=$X\""],
            &RunOpts::new().env("APPTAINERENV_X", "a"),
        );
        assert_prints(&out, "X=a\n");
    }
}

#[test]
fn pwd_sets_the_working_directory() {
    let (Some(install), Some(users), Some(sif)) = (Install::shared(), both_users(), busybox_image()) else {
        return;
    };
    for user in users {
        let out = strata(install, user, &argv!["exec", "--pwd", "/tmp", &sif, "pwd"]);
        assert_prints(&out, "/tmp\n");
        let out = strata(install, user, &argv!["exec", "--pwd", "/etc", "--contain", &sif, "pwd"]);
        assert_prints(&out, "/etc\n");
        // Without --pwd: the directory strata was started in (bound from the host).
        let dir = TestDir::owned_by(user).unwrap();
        let out = install.strata_as(user, &argv!["exec", &sif, "pwd"], &RunOpts::new().cwd(dir.path()));
        assert_prints(&out, &format!("{}\n", dir.path().display()));
    }
}

/// busybox_amd64.sif's env scripts: 10-docker2singularity.sh sets PATH, 99-base.sh sets
/// LD_LIBRARY_PATH=/.singularity.d/libs and PS1 (which strata replaces with its own prompt).
#[test]
fn apptainer_env_scripts_of_the_image_are_honoured() {
    let (Some(install), Some(users), Some(sif)) = (Install::shared(), both_users(), reference_sif()) else {
        return;
    };
    for user in users {
        let out = install.strata_as(
            user,
            &argv!["exec", &sif, "sh", "-c", "echo \"$LD_LIBRARY_PATH\"; echo \"$PATH\"; echo \"$PS1\""],
            &RunOpts::new().env("PATH", "/host/only/bin:/usr/bin:/bin"),
        );
        assert_prints(
            &out,
            "/.singularity.d/libs\n/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n\
             Strata> \n",
        );
        // Apptainer's variables describing the container.
        let out = strata(
            install,
            user,
            &argv![
                "exec",
                &sif,
                "sh",
                "-c",
                "echo \"$APPTAINER_CONTAINER|$APPTAINER_NAME|$APPTAINER_COMMAND\""
            ],
        );
        assert_prints(&out, &format!("{}|busybox_amd64.sif|exec\n", sif.display()));
    }
}

// ---------------------------------------------------------------------------------------------
// PID namespace

#[test]
fn pid_namespace_hides_the_host_processes() {
    let (Some(install), Some(users), Some(sif)) = (Install::shared(), both_users(), busybox_image()) else {
        return;
    };
    let me = std::process::id();
    let script = format!(
        "echo \"self=$$\"; echo \"init=$(cat /proc/1/comm)\"; grep '^Uid:' /proc/1/status; \
         for p in /proc/[0-9]*; do printf '%s ' \"${{p#/proc/}}\"; done; echo; \
         test -e /proc/{me} && echo sees-host || echo hidden"
    );
    for user in users {
        for flag in ["--pid", "-p"] {
            let out = strata(install, user, &argv!["exec", flag, &sif, "sh", "-c", &script]);
            let uid = user.uid;
            assert_prints(
                &out,
                &format!("self=2\ninit=strata-starter\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n1 2 \nhidden\n"),
            );
        }
        // Without --pid the host's processes are there (the contrast that makes the above mean
        // something).
        let out = strata(install, user, &argv!["exec", &sif, "sh", "-c", &script]);
        out.assert_success().assert_stdout_contains("sees-host");
    }
}

// ---------------------------------------------------------------------------------------------
// Architecture

#[test]
fn an_image_for_another_architecture_is_refused() {
    let (Some(install), Some(user), Some(images)) = (Install::shared(), TestUser::high(), busybox()) else {
        return;
    };
    if !cfg!(target_arch = "x86_64") {
        strata_e2e::skip("the test builds an amd64 image as the one the host can run");
        return;
    }
    let emulated = fs::read_dir("/proc/sys/fs/binfmt_misc")
        .map(|d| d.flatten().any(|e| e.file_name().to_string_lossy().contains("aarch64")))
        .unwrap_or(false);
    if emulated {
        strata_e2e::skip("an arm64 emulator is registered in binfmt_misc");
        return;
    }
    let dir = TestDir::owned_by(user).unwrap();
    let native = make_sif(install, user, &dir, &images.squashfs, ARCH_AMD64, "amd64.sif");
    let out = strata(install, user, &argv!["exec", &native, "echo", "hello"]);
    assert_prints(&out, "hello\n");

    let foreign = make_sif(install, user, &dir, &images.squashfs, ARCH_ARM64, "arm64.sif");
    for action in ["exec", "run", "shell", "test"] {
        let mut args = argv![action, &foreign];
        if action == "exec" {
            args.push("true".into());
        }
        let out = strata(install, user, &args);
        out.assert_code(255);
        assert_eq!(out.stdout, "", "{out}");
        assert_eq!(
            out.stderr,
            format!(
                "FATAL:   {}: the image's architecture (arm64) could not run on the host's \
                 (amd64); a persistent binfmt_misc emulator (qemu-user-static) would allow it\n",
                foreign.display()
            ),
            "{out}"
        );
    }
}

/// With the install's own action shell, the command is still the image's program, never one of
/// the shell's built-in applets.
#[test]
fn exec_runs_the_images_program_not_the_action_shells_applet() {
    let (Some(install), Some(user), Some(images)) = (Install::shared(), TestUser::ordinary(), busybox())
    else {
        return;
    };
    let dir = TestDir::owned_by(user).unwrap();
    let image = dir.copy_in(&images.squashfs, "img.sqfs");
    let out = strata(install, user, &argv!["exec", &image, "ls", "-l", "/proc/self/exe"]);
    out.assert_success();
    assert!(!out.stdout.contains("libexec/strata"), "the action shell ran ls itself:\n{out}");
    assert!(out.stdout.contains("-> /bin/busybox"), "{out}");
}
