//! Fuzz the SIF reader and siftool's text output on arbitrary bytes: no panic, no unbounded
//! allocation, and whatever is accepted satisfies the reader's promises.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata::sif::{display, Sif};

fuzz_target!(|data: &[u8]| {
    let Ok(sif) = Sif::read_from(data) else { return };
    let len = data.len() as u64;
    let mut spans: Vec<(u64, u64)> = Vec::new();
    for d in sif.descriptors() {
        assert!(d.id != 0);
        if d.size > 0 {
            assert!(d.offset >= 128 && d.end() <= len, "object outside the file");
            spans.push((d.offset, d.end()));
        }
        let _ = display::info(d);
        let _ = sif.get_descriptor(d.id);
    }
    spans.sort();
    assert!(spans.windows(2).all(|w| w[0].1 <= w[1].0), "overlapping objects accepted");
    let _ = display::list(&sif);
    let _ = display::header(&sif);
    let _ = sif.primary_partition();
});
