//! What runs inside the container for `exec`, `run`, `shell`, `test` (and an instance's `start`):
//! `/bin/sh -c SCRIPT strata ARGS...`, where SCRIPT is a POSIX sh program that does what
//! Apptainer's `action_script.sh` does:
//!
//! 1. hide the host and user variables ([`VarKind::Host`], [`VarKind::User`]) in unexported
//!    shell variables, so that the image's scripts start from a clean environment;
//! 2. source `/.singularity.d/env/*.sh` in order (`/environment` for images older than
//!    Singularity 2.3), fixing `PATH` around the docker and `90-environment.sh` scripts;
//! 3. right after `99-base.sh` (or after the last script when there is none), export the user's
//!    values again, so `--env` and `APPTAINERENV_*` win over the image's `%environment`; apply
//!    `SING_USER_DEFINED_*PATH` if the image has no `99-runtimevars.sh` to do it;
//! 4. restore the host variables the image's scripts did not set;
//! 5. set the prompt (`Strata> ` unless the image chose its own) and `APPTAINER_ENVIRONMENT`;
//! 6. run the action: `exec "$@"`, the runscript, the test script, or a shell.
//!
//! The script's file paths are prefixed by a root (empty for a real container) so that tests can
//! run it with the host's `/bin/sh` against a directory laid out like an image.

use std::fmt::Write as _;
use std::path::Path;

use super::env::{is_name, ContainerEnv, VarKind, DEFAULT_PATH};
use crate::log::Level;

/// The container's interpreter for the action script.
pub const SHELL: &str = "/bin/sh";
/// `$0` of the action script, as error messages from `sh` show it.
pub const ARGV0: &str = "strata";
/// The prompt strata gives shells.
pub const PROMPT: &str = "Strata> ";

/// The action a command asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// `exec IMAGE COMMAND...`
    Exec,
    /// `run IMAGE ARGS...`: the runscript.
    Run,
    /// `shell IMAGE`
    Shell,
    /// `test IMAGE`: the test script.
    Test,
    /// `instance start IMAGE NAME ARGS...`: the start script.
    Start,
}

impl Action {
    /// The name scripts see in `APPTAINER_COMMAND`.
    pub fn name(self) -> &'static str {
        match self {
            Action::Exec => "exec",
            Action::Run => "run",
            Action::Shell => "shell",
            Action::Test => "test",
            Action::Start => "start",
        }
    }
}

/// Host variables the script never hides: the shell manages them itself.
const UNTOUCHED: &[&str] = &["PWD", "HOME", "OPTIND", "UID", "GID", "IFS", "PPID", "_"];

/// Quote a string for sh (single quotes).
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The action script for one command.
#[derive(Clone, Debug)]
pub struct ActionScript {
    action: Action,
    root: String,
    level: Level,
    host_names: Vec<String>,
    user_names: Vec<String>,
}

impl ActionScript {
    /// The script for `action`, hiding and restoring the variables of `env` by their kind.
    pub fn new(action: Action, env: &ContainerEnv) -> ActionScript {
        let pick = |kind| {
            env.names(kind)
                .filter(|n| is_name(n) && !UNTOUCHED.contains(n) && !n.starts_with("__strata_"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        ActionScript {
            action,
            root: String::new(),
            level: crate::log::level(),
            host_names: pick(VarKind::Host),
            user_names: pick(VarKind::User),
        }
    }

    /// Prefix every path of the image with `root` (tests run the script against a directory
    /// laid out like an image; a container uses the default, no prefix).
    pub fn with_root(mut self, root: &Path) -> ActionScript {
        self.root = root.to_string_lossy().trim_end_matches('/').to_string();
        self
    }

    /// Print the script's INFO/ERROR lines as at this level (default: the process's level).
    pub fn with_level(mut self, level: Level) -> ActionScript {
        self.level = level;
        self
    }

    /// The argv to execute in the container: `/bin/sh -c SCRIPT strata ARGS...`.
    pub fn argv(&self, args: &[String]) -> Vec<String> {
        let mut argv = vec![SHELL.to_string(), "-c".to_string(), self.script(), ARGV0.to_string()];
        argv.extend(args.iter().cloned());
        argv
    }

    /// Where the program the script will end in probably is, in the container: the command
    /// looked up in the default `PATH` for `exec`, the shell otherwise (runscripts are shell
    /// scripts). Only a hint for reading it ahead; the script decides.
    pub fn payload_candidates(&self, args: &[String]) -> Vec<String> {
        let plain = |p: &String| {
            std::path::Path::new(p)
                .components()
                .all(|c| matches!(c, std::path::Component::RootDir | std::path::Component::Normal(_)))
        };
        let found = match (self.action, args.first()) {
            (Action::Exec, Some(cmd)) if cmd.starts_with('/') => vec![cmd.clone()],
            (Action::Exec, Some(cmd)) if cmd.contains('/') => Vec::new(), // relative to the cwd
            (Action::Exec, Some(cmd)) if !cmd.is_empty() => {
                DEFAULT_PATH.split(':').map(|d| format!("{d}/{cmd}")).collect()
            }
            (Action::Exec, _) => Vec::new(),
            (Action::Shell, _) => vec!["/bin/bash".into(), SHELL.into()],
            (Action::Run | Action::Test | Action::Start, _) => vec![SHELL.into()],
        };
        found.into_iter().filter(plain).collect()
    }

    /// The script text.
    pub fn script(&self) -> String {
        let mut s = String::with_capacity(4096);
        let info = if self.level >= Level::Info { "1" } else { "" };
        let _ = writeln!(s, "# strata {} action script", self.action.name());
        let _ = writeln!(s, "__strata_root={}", sh_quote(&self.root));
        let _ = writeln!(s, "__strata_host={}", sh_quote(&self.host_names.join(" ")));
        let _ = writeln!(s, "__strata_user={}", sh_quote(&self.user_names.join(" ")));
        let _ = writeln!(s, "__strata_info={info}");
        // One line per variable rather than an `eval` loop: a fresh shell parses them once,
        // which is measurably cheaper at start-up. Names are shell identifiers (checked when the
        // lists are built), so only names, never values, are written into the script.
        let lines =
            |names: &[String], f: &dyn Fn(&str) -> String| names.iter().map(|n| f(n)).collect::<String>();
        let inject = lines(&self.user_names, &|n| {
            format!("    if [ -n \"${{__strata_u_{n}+x}}\" ]; then {n}=$__strata_u_{n}; export {n}; fi\n")
        });
        let hide_host = lines(&self.host_names, &|n| {
            format!("if [ -n \"${{{n}+x}}\" ]; then __strata_h_{n}=${n}; unset {n}; fi\n")
        });
        let hide_user = lines(&self.user_names, &|n| {
            format!("if [ -n \"${{{n}+x}}\" ]; then __strata_u_{n}=${n}; unset {n}; fi\n")
        });
        let restore_host = lines(&self.host_names, &|n| {
            format!(
                "if [ -z \"${{{n}+x}}\" ] && [ -n \"${{__strata_h_{n}+x}}\" ]; then {n}=$__strata_h_{n}; export {n}; fi\n"
            )
        });
        s.push_str(
            PRELUDE
                .replace("@DEFAULT_PATH_DIRS@", &DEFAULT_PATH.replace(':', " "))
                .replace("@PROMPT@", &sh_quote(PROMPT))
                .replace("@INJECT_USER@", &inject)
                .replace("@HIDE_HOST@", &hide_host)
                .replace("@HIDE_USER@", &hide_user)
                .replace("@RESTORE_HOST@", &restore_host)
                .as_str(),
        );
        s.push_str(match self.action {
            Action::Exec => EXEC,
            Action::Run => RUN,
            Action::Shell => SHELL_ACTION,
            Action::Test => TEST,
            Action::Start => START,
        });
        s
    }
}

/// Steps 1 to 5, common to every action. The `@..@` placeholders become one line per variable
/// name (shell identifiers, checked when the lists are built); no value is ever in the script.
const PRELUDE: &str = r#"__strata_log() { printf '%s%s\n' "$1" "$2" >&2; }
__strata_fixpath() {
    __strata_p=${PATH:-}
    for __strata_d in @DEFAULT_PATH_DIRS@; do
        case ":$__strata_p:" in
        *":$__strata_d:"*) ;;
        *) __strata_p=${__strata_p:+$__strata_p:}$__strata_d ;;
        esac
    done
    PATH=$__strata_p
    export PATH
}
__strata_injected=
__strata_inject() {
    [ -n "$__strata_injected" ] && return 0
    __strata_injected=1
@INJECT_USER@}
@HIDE_HOST@@HIDE_USER@# The running shell's own default prompt is not the image's: only the image or the user sets it.
unset PS1
__strata_runtimevars=
if [ -d "$__strata_root/.singularity.d/env" ]; then
    for __strata_script in "$__strata_root"/.singularity.d/env/*.sh; do
        [ -f "$__strata_script" ] || continue
        case "${__strata_script##*/}" in
        90-environment.sh)
            [ -n "${PATH+x}" ] || __strata_fixpath
            . "$__strata_script"
            ;;
        10-docker2singularity.sh|10-docker.sh)
            . "$__strata_script"
            __strata_fixpath
            ;;
        99-base.sh)
            . "$__strata_script"
            __strata_inject
            ;;
        99-runtimevars.sh)
            __strata_inject
            . "$__strata_script"
            __strata_runtimevars=1
            ;;
        *)
            . "$__strata_script"
            ;;
        esac
    done
elif [ -f "$__strata_root/environment" ]; then
    . "$__strata_root/environment"
    __strata_fixpath
fi
__strata_inject
if [ -z "$__strata_runtimevars" ]; then
    if [ -n "${SING_USER_DEFINED_PREPEND_PATH:-}" ]; then
        PATH="$SING_USER_DEFINED_PREPEND_PATH:$PATH"
    fi
    if [ -n "${SING_USER_DEFINED_APPEND_PATH:-}" ]; then
        PATH="$PATH:$SING_USER_DEFINED_APPEND_PATH"
    fi
    if [ -n "${SING_USER_DEFINED_PATH:-}" ]; then
        PATH="$SING_USER_DEFINED_PATH"
    fi
    export PATH
fi
unset SING_USER_DEFINED_PREPEND_PATH SING_USER_DEFINED_APPEND_PATH SING_USER_DEFINED_PATH
@RESTORE_HOST@case "${PS1:-}" in
""|"Singularity> "|"Apptainer> ") PS1=@PROMPT@ ;;
esac
export PS1
if [ -z "${PROMPT_COMMAND:-}" ]; then
    PROMPT_COMMAND="PS1=\"${PS1}\"; unset PROMPT_COMMAND"
else
    PROMPT_COMMAND="${PROMPT_COMMAND}; PROMPT_COMMAND=\"\${PROMPT_COMMAND%%; PROMPT_COMMAND=*}\"; PS1=\"${PS1}\""
fi
export PROMPT_COMMAND
APPTAINER_ENVIRONMENT=${APPTAINER_ENVIRONMENT:-/.singularity.d/env/91-environment.sh}
SINGULARITY_ENVIRONMENT=$APPTAINER_ENVIRONMENT
export APPTAINER_ENVIRONMENT SINGULARITY_ENVIRONMENT
"#;

/// The command is looked up here, in the container's `PATH`, and executed by its path: the
/// shell running this script may be the install's own static shell, whose built-in applets
/// must never stand in for the image's programs.
const EXEC: &str = r#"__strata_cmd=
case "$1" in
*/*)
    if [ -f "$1" ] && [ -x "$1" ]; then __strata_cmd=$1; fi
    ;;
?*)
    __strata_ifs=$IFS
    IFS=:
    set -f
    for __strata_d in $PATH; do
        if [ -f "${__strata_d:-.}/$1" ] && [ -x "${__strata_d:-.}/$1" ]; then
            __strata_cmd=${__strata_d:-.}/$1
            break
        fi
    done
    set +f
    IFS=$__strata_ifs
    ;;
esac
if [ -z "$__strata_cmd" ]; then
    __strata_log 'FATAL:   ' "\"$1\": executable file not found in \$PATH"
    exit 255
fi
shift
exec "$__strata_cmd" "$@"
"#;

const RUN: &str = r#"if [ -x "$__strata_root/.singularity.d/runscript" ]; then
    exec "$__strata_root/.singularity.d/runscript" "$@"
elif [ -x "$__strata_root/apptainer" ]; then
    exec "$__strata_root/apptainer" "$@"
elif [ -x "$__strata_root/bin/sh" ]; then
    [ -n "$__strata_info" ] && __strata_log 'INFO:    ' 'No runscript found in container, executing /bin/sh'
    exec "$__strata_root/bin/sh" "$@"
fi
__strata_log 'ERROR:   ' 'No runscript and no /bin/sh executable found in container, aborting'
exit 1
"#;

const SHELL_ACTION: &str = r#"if [ -n "${APPTAINER_SHELL:-}" ] && [ -x "$__strata_root$APPTAINER_SHELL" ]; then
    exec "$__strata_root$APPTAINER_SHELL" "$@"
elif [ -x "$__strata_root/bin/bash" ]; then
    SHELL=/bin/bash
    export SHELL
    exec "$__strata_root/bin/bash" --norc "$@"
elif [ -x "$__strata_root/bin/sh" ]; then
    SHELL=/bin/sh
    export SHELL
    exec "$__strata_root/bin/sh" "$@"
fi
__strata_log 'ERROR:   ' '/bin/sh does not exist in container'
exit 1
"#;

const TEST: &str = r#"if [ -x "$__strata_root/.singularity.d/test" ]; then
    exec "$__strata_root/.singularity.d/test" "$@"
fi
[ -n "$__strata_info" ] && __strata_log 'INFO:    ' 'No test script found in container, exiting'
exit 0
"#;

const START: &str = r#"if [ -x "$__strata_root/.singularity.d/startscript" ]; then
    exec "$__strata_root/.singularity.d/startscript" "$@"
fi
[ -n "$__strata_info" ] && __strata_log 'INFO:    ' 'No instance start script found in container'
exit 0
"#;

#[cfg(test)]
mod tests;
