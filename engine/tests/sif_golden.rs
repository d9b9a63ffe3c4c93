//! `strata sif list|header|info` print exactly what siftool prints for every reference image.

mod common;
use common::{ok, testdata};

#[test]
fn output_matches_every_siftool_golden() {
    let Some(td) = testdata() else { return };
    let images = td.join("sif/images");
    let mut checked = 0;
    let mut goldens: Vec<_> =
        std::fs::read_dir(td.join("sif/golden")).unwrap().map(|e| e.unwrap().path()).collect();
    goldens.sort();
    for golden in goldens {
        let stem = golden.file_stem().unwrap().to_str().unwrap().to_string();
        let (cmd, rest) = stem.split_once('-').unwrap();
        let out = match cmd {
            "List" => ok(["sif".as_ref(), "list".as_ref(), images.join(format!("{rest}.sif")).as_os_str()]),
            "Header" => {
                ok(["sif".as_ref(), "header".as_ref(), images.join(format!("{rest}.sif")).as_os_str()])
            }
            "Info" => {
                let (img, id) = rest.rsplit_once('-').unwrap();
                ok([
                    "sif".as_ref(),
                    "info".as_ref(),
                    id.as_ref(),
                    images.join(format!("{img}.sif")).as_os_str(),
                ])
            }
            other => panic!("unknown golden kind {other} in {}", golden.display()),
        };
        let want = std::fs::read(&golden).unwrap();
        assert!(
            out == want,
            "{stem}: got\n{}\nwant\n{}",
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&want)
        );
        checked += 1;
    }
    assert!(checked >= 25, "only {checked} goldens found");
}

#[test]
fn every_image_lists_and_every_object_shows() {
    let Some(td) = testdata() else { return };
    for e in std::fs::read_dir(td.join("sif/images")).unwrap() {
        let img = e.unwrap().path();
        let list = String::from_utf8(ok(["sif".as_ref(), "list".as_ref(), img.as_os_str()])).unwrap();
        ok(["sif".as_ref(), "header".as_ref(), img.as_os_str()]);
        for line in list.lines().skip(3) {
            let id = line.split_whitespace().next().unwrap();
            ok(["sif".as_ref(), "info".as_ref(), id.as_ref(), img.as_os_str()]);
        }
    }
}

#[test]
fn dump_prints_the_raw_object() {
    let Some(td) = testdata() else { return };
    let img = td.join("sif/images/one-group.sif");
    assert_eq!(
        ok(["sif".as_ref(), "dump".as_ref(), "1".as_ref(), img.as_os_str()]),
        [0xfa, 0xce, 0xfe, 0xed]
    );
    let squash = std::fs::read(td.join("sif/input/root.squashfs")).unwrap();
    assert_eq!(ok(["sif".as_ref(), "dump".as_ref(), "2".as_ref(), img.as_os_str()]), squash);
}
