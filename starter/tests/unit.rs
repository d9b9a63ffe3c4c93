//! Unit tests of the starter's pure pieces (kept out of `src/` so the audited code stays small).

mod plan {
    use strata_starter::plan::*;

    fn sample() -> Plan {
        Plan {
            version: PLAN_VERSION,
            rootfs: Layer { fd: 4, kind: LayerKind::Squashfs, offset: 4096, size: 8192, writable: false },
            overlays: vec![],
            writable_tmpfs: false,
            binds: vec![Bind { fd: 5, dest: "/data".into(), readonly: true, optional: false }],
            mounts: Mounts {
                proc: true,
                sys: true,
                dev: DevMode::Minimal,
                tmp_tmpfs: false,
                home_tmpfs: None,
            },
            namespaces: Namespaces::default(),
            identity: None,
            process: Process {
                argv: vec!["/bin/true".into()],
                env: vec!["PATH=/bin".into()],
                cwd: "/".into(),
                umask: 0o022,
                interpreter_fd: None,
                prefetch: Vec::new(),
            },
            log_level: 0,
        }
    }

    #[test]
    fn round_trips() {
        let p = sample();
        assert_eq!(Plan::parse(&p.to_json()).unwrap(), p);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let mut v: serde_json::Value = serde_json::from_slice(&sample().to_json()).unwrap();
        v["uid"] = 0.into();
        let e = Plan::parse(v.to_string().as_bytes()).unwrap_err();
        assert!(e.to_string().contains("unknown field `uid`"), "{e}");
        let mut v: serde_json::Value = serde_json::from_slice(&sample().to_json()).unwrap();
        v["rootfs"]["owner"] = 0.into();
        let e = Plan::parse(v.to_string().as_bytes()).unwrap_err();
        assert!(e.to_string().contains("unknown field `owner`"), "{e}");
    }

    #[test]
    fn duplicate_fields_are_refused() {
        let j = String::from_utf8(sample().to_json()).unwrap();
        let j = j.replacen("\"version\":1", "\"version\":1,\"version\":1", 1);
        assert!(Plan::parse(j.as_bytes()).is_err());
    }

    #[test]
    fn wrong_version_is_refused() {
        let mut p = sample();
        p.version = 99;
        let e = Plan::parse(&p.to_json()).unwrap_err();
        assert!(e.to_string().contains("plan version 99"), "{e}");
    }

    #[test]
    fn oversized_plan_is_refused_before_parsing() {
        let big = vec![b' '; MAX_PLAN_BYTES + 10];
        assert!(matches!(Plan::read_from(&big[..]), Err(PlanError::TooLarge)));
    }

    #[test]
    fn deep_nesting_is_refused_without_overflow() {
        let deep = "[".repeat(100_000);
        assert!(Plan::parse(deep.as_bytes()).is_err());
    }

    #[test]
    fn negative_numbers_are_refused() {
        let j = String::from_utf8(sample().to_json()).unwrap();
        let j = j.replacen("\"offset\":4096", "\"offset\":-1", 1);
        assert!(Plan::parse(j.as_bytes()).is_err());
    }
}

mod grant {
    use strata_starter::grant::*;

    #[test]
    fn container_paths_are_normalised_or_refused() {
        assert_eq!(container_path("/a//b/", "x").unwrap(), "/a/b");
        assert_eq!(container_path("/", "x").unwrap(), "/");
        assert!(container_path("a/b", "x").is_err());
        assert!(container_path("/a/../etc", "x").is_err());
        assert!(container_path("/a/./b", "x").is_ok()); // Path::components drops inner "."
        assert!(container_path("/a\0b", "x").is_err());
    }

    #[test]
    fn ext3_check_follows_apptainer() {
        let mut sb = vec![0u8; 2048];
        sb[1080] = 0x53;
        sb[1081] = 0xEF;
        assert!(!is_ext3(&sb), "no journal: ext2");
        sb[1116] = 0x4;
        assert!(is_ext3(&sb));
        sb[1120] = 0x40; // extents: ext4
        assert!(!is_ext3(&sb));
        assert!(!is_ext3(&sb[..100]));
    }
}

mod identity {
    use strata_starter::identity::*;

    #[test]
    fn passwd_entry_replaces_same_name_or_uid() {
        let image = "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n";
        let out = merge_passwd(image, "bob:x:1000:1000:Bob:/home/bob:/bin/bash");
        assert_eq!(out, "root:x:0:0:root:/root:/bin/sh\nbob:x:1000:1000:Bob:/home/bob:/bin/bash\n");
        let out = merge_passwd("", "big:x:100000:100000::/home/big:/bin/sh");
        assert_eq!(out, "big:x:100000:100000::/home/big:/bin/sh\n");
    }

    #[test]
    fn the_caller_joins_existing_groups_and_missing_ones_are_added() {
        let image = "root:x:0:\nusers:x:100:alice\n";
        let entries = ["users:x:100:bob".into(), "big:x:100000:bob".into(), "users:x:100:bob".into()];
        let out = merge_group(image, &entries);
        assert_eq!(out, "root:x:0:\nusers:x:100:alice,bob\nbig:x:100000:bob\n");
        assert_eq!(merge_group("", &["g:x:5:u".into()]), "g:x:5:u\n");
    }
}
