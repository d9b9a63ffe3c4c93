//! Can the host run an image built for another architecture? Apptainer's
//! `machine.CompatibleWith`: the same architecture, a 32-bit sibling the host runs natively, or
//! an emulator registered in binfmt_misc with the persistent (`F`) flag.
//!
//! Architectures are named as Go names them (`amd64`, `arm64`, ...), as SIF stores them.

use std::path::Path;

const BINFMT_MISC: &str = "/proc/sys/fs/binfmt_misc";

/// The host's architecture, named as Go (and SIF) name it.
pub fn host_arch() -> &'static str {
    if cfg!(target_arch = "x86_64") {
        "amd64"
    } else if cfg!(target_arch = "x86") {
        "386"
    } else if cfg!(target_arch = "aarch64") {
        if cfg!(target_endian = "big") {
            "arm64be"
        } else {
            "arm64"
        }
    } else if cfg!(target_arch = "arm") {
        "arm"
    } else if cfg!(target_arch = "powerpc64") {
        if cfg!(target_endian = "little") {
            "ppc64le"
        } else {
            "ppc64"
        }
    } else if cfg!(target_arch = "s390x") {
        "s390x"
    } else if cfg!(target_arch = "riscv64") {
        "riscv64"
    } else if cfg!(target_arch = "loongarch64") {
        "loong64"
    } else if cfg!(target_arch = "mips64") {
        if cfg!(target_endian = "little") {
            "mips64le"
        } else {
            "mips64"
        }
    } else if cfg!(target_arch = "mips") {
        if cfg!(target_endian = "little") {
            "mipsle"
        } else {
            "mips"
        }
    } else {
        "unknown"
    }
}

/// The 64-bit architecture that runs binaries of `arch` natively, for the 32-bit ones.
fn native_superset(arch: &str) -> Option<&'static str> {
    match arch {
        "386" => Some("amd64"),
        "arm" => Some("arm64"),
        "armbe" => Some("arm64be"),
        "mips" => Some("mips64"),
        "mipsle" => Some("mips64le"),
        _ => None,
    }
}

/// The first 20 bytes of an ELF executable of `arch`, as binfmt_misc prints a `magic` line
/// (lower-case hex), for the architectures Apptainer knows.
fn elf_magic_hex(arch: &str) -> Option<&'static str> {
    Some(match arch {
        "386" => "7f454c4601010100000000000000000002000300",
        "amd64" => "7f454c4602010100000000000000000002003e00",
        "arm" => "7f454c4601010100000000000000000002002800",
        "armbe" => "7f454c4601020100000000000000000000020028",
        "arm64" => "7f454c460201010000000000000000000200b700",
        "arm64be" => "7f454c46020201000000000000000000000200b7",
        "s390x" => "7f454c4602020100000000000000000000020016",
        "ppc64" => "7f454c4602020100000000000000000000020015",
        "ppc64le" => "7f454c4602010100000000000000000002001500",
        "mips" => "7f454c4601020100000000000000000000020008",
        "mipsle" => "7f454c4601010100000000000000000002000800",
        "mips64" => "7f454c4602020100000000000000000000020008",
        "mips64le" => "7f454c4602010100000000000000000002000800",
        "riscv64" => "7f454c460201010000000000000000000200f300",
        _ => return None,
    })
}

/// True if a container built for `arch` can run on `host`, looking for emulators in the
/// binfmt_misc directory `binfmt` (normally `/proc/sys/fs/binfmt_misc`).
pub fn compatible_with(arch: &str, host: &str, binfmt: &Path) -> bool {
    arch == host || native_superset(arch) == Some(host) || can_emulate(arch, binfmt)
}

/// True if the host can run a container built for `arch`. `unknown` is not checked by
/// Apptainer and is accepted here too.
pub fn host_can_run(arch: &str) -> bool {
    arch == "unknown" || compatible_with(arch, host_arch(), Path::new(BINFMT_MISC))
}

/// An enabled, persistent (`F` flag) binfmt_misc entry whose magic is the ELF header of `arch`.
fn can_emulate(arch: &str, binfmt: &Path) -> bool {
    let Some(magic) = elf_magic_hex(arch) else {
        return false;
    };
    match std::fs::read_to_string(binfmt.join("status")) {
        Ok(s) if s == "enabled\n" => {}
        _ => return false,
    }
    let Ok(entries) = std::fs::read_dir(binfmt) else {
        return false;
    };
    entries.flatten().any(|entry| {
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            return false;
        };
        let mut enabled = false;
        let mut persistent = false;
        let mut entry_magic = "";
        for line in text.lines() {
            if line == "enabled" {
                enabled = true;
            } else if let Some(rest) = line.strip_prefix("magic ") {
                entry_magic = rest.trim();
            } else if let Some(rest) = line.strip_prefix("flags: ") {
                persistent = rest.contains('F');
            } else if let Some(rest) = line.strip_prefix("flags ") {
                persistent = rest.contains('F');
            }
        }
        enabled && persistent && entry_magic == magic
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_arch_and_native_32_bit_siblings_run() {
        let nowhere = Path::new("/nonexistent-binfmt");
        assert!(compatible_with("amd64", "amd64", nowhere));
        assert!(compatible_with("386", "amd64", nowhere));
        assert!(compatible_with("arm", "arm64", nowhere));
        assert!(!compatible_with("arm64", "amd64", nowhere));
        assert!(!compatible_with("amd64", "386", nowhere));
        assert!(!compatible_with("ppc64le", "amd64", nowhere));
    }

    #[test]
    fn a_persistent_binfmt_emulator_makes_an_arch_runnable() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        std::fs::write(dir.join("status"), "enabled\n").unwrap();
        std::fs::write(
            dir.join("qemu-aarch64"),
            "enabled\ninterpreter /usr/bin/qemu-aarch64-static\nflags: F\noffset 0\n\
             magic 7f454c460201010000000000000000000200b700\nmask ffffffffffffff00fffffffffffffffffeffffff\n",
        )
        .unwrap();
        assert!(compatible_with("arm64", "amd64", &dir));
        assert!(!compatible_with("riscv64", "amd64", &dir));

        // Not persistent: the emulator would not be reachable from inside the container.
        std::fs::write(
            dir.join("qemu-aarch64"),
            "enabled\nflags: \nmagic 7f454c460201010000000000000000000200b700\n",
        )
        .unwrap();
        assert!(!compatible_with("arm64", "amd64", &dir));

        // binfmt_misc globally disabled.
        std::fs::write(
            dir.join("qemu-aarch64"),
            "enabled\nflags: F\nmagic 7f454c460201010000000000000000000200b700\n",
        )
        .unwrap();
        std::fs::write(dir.join("status"), "disabled\n").unwrap();
        assert!(!compatible_with("arm64", "amd64", &dir));
    }

    #[test]
    fn every_known_magic_is_20_bytes() {
        for arch in [
            "386", "amd64", "arm", "armbe", "arm64", "arm64be", "s390x", "ppc64", "ppc64le", "mips",
            "mipsle", "mips64", "mips64le", "riscv64",
        ] {
            assert_eq!(elf_magic_hex(arch).unwrap().len(), 40, "{arch}");
        }
    }

    #[test]
    fn the_host_runs_its_own_arch_and_unknown() {
        assert_ne!(host_arch(), "unknown");
        assert!(host_can_run(host_arch()));
        assert!(host_can_run("unknown"));
    }
}
