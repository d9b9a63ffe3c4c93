//! siftool's text output, byte for byte: `header`, `list`, `info` (research/sif.md §3.3).

use super::descriptor::Descriptor;
use super::error::SifError;
use super::format::{DataType, Link, ZERO_TIME};
use super::read::Sif;
use super::tabwriter::TabWriter;

/// Go's `readableSize`: `N B` below 1 KiB, else rounded (half away from zero) in the largest
/// unit that keeps the integer part below 1024 (`1048064` is `1024 KiB`: no carry).
pub fn readable_size(size: i64) -> String {
    if -1024 < size && size < 1024 {
        return format!("{size} B");
    }
    let (mut div, mut exp, mut n) = (1024u64, 0usize, size / 1024);
    while n <= -1024 || n >= 1024 {
        div *= 1024;
        exp += 1;
        n /= 1024;
    }
    let v = (size as f64 / div as f64).round();
    format!("{v:.0} {}iB", b"KMGTPE"[exp] as char)
}

/// Go's `time.Unix(t, 0).UTC().String()` for whole seconds: `2006-01-02 15:04:05 +0000 UTC`.
pub fn go_time(t: i64) -> String {
    let secs = i128::from(t);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Days to civil date (proleptic Gregorian; H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i128::from(month <= 2);
    let y = if year < 0 { format!("-{:04}", -year) } else { format!("{year:04}") };
    format!("{y}-{month:02}-{day:02} {:02}:{:02}:{:02} +0000 UTC", sod / 3600, sod / 60 % 60, sod % 60)
}

/// `siftool header`.
pub fn header(sif: &Sif) -> Vec<u8> {
    let h = &sif.header;
    let mut tw = TabWriter::new(1);
    let script = h.launch_script();
    if !script.is_empty() {
        tw.write(b"Launch Script:\t");
        tw.write(script.strip_suffix(b"\n").unwrap_or(script));
        tw.write(b"\n");
    }
    tw.write(b"Version:\t01\n");
    let arch = h.arch();
    if arch != super::Arch::Unknown {
        tw.write(format!("Primary Architecture:\t{arch}\n").as_bytes());
    }
    if let Some(id) = h.uuid() {
        tw.write(format!("ID:\t{id}\n").as_bytes());
    }
    if h.created_at != ZERO_TIME {
        tw.write(format!("Created At:\t{}\n", go_time(h.created_at)).as_bytes());
    }
    if h.modified_at != ZERO_TIME {
        tw.write(format!("Modified At:\t{}\n", go_time(h.modified_at)).as_bytes());
    }
    let rest = format!(
        "Descriptors Free:\t{}\nDescriptors Total:\t{}\nDescriptors Offset:\t{}\nDescriptors Size:\t{}\n\
         Data Offset:\t{}\nData Size:\t{}\n",
        h.descriptors_free,
        h.descriptors_total,
        h.descriptors_offset,
        readable_size(h.descriptors_size),
        h.data_offset,
        readable_size(h.data_size)
    );
    tw.write(rest.as_bytes());
    tw.flush();
    tw.into_output()
}

const RULE: &str = "------------------------------------------------------------------------------\n";

/// `siftool list`. A signature whose hash type is outside the table gets no type column and no
/// newline, as in siftool.
pub fn list(sif: &Sif) -> Vec<u8> {
    let mut s = String::from(RULE);
    s += &format!(
        "{:<4} {:<8} {:<8} {:<26} {}\n",
        "ID", "|GROUP", "|LINK", "|SIF POSITION (start-end)", "|TYPE"
    );
    s += RULE;
    for d in sif.descriptors() {
        s += &format!("{:<4} ", d.id);
        s += &match d.group_id {
            0 => format!("|{:<7} ", "NONE"),
            g => format!("|{g:<7} "),
        };
        s += &match d.linked {
            None => format!("|{:<7} ", "NONE"),
            Some(Link::Group(g)) => format!("|{g:<3} (G) "),
            Some(Link::Object(id)) => format!("|{id:<7} "),
        };
        s += &format!("{:<26} ", format!("|{}-{} ", d.offset, d.end()));
        let dt = d.data_type;
        if let Some(p) = d.partition() {
            s += &format!("|{dt} ({}/{}/{})\n", p.fstype, p.parttype, p.arch);
        } else if let Some(sig) = d.signature() {
            if !matches!(sig.hash, super::HashType::Other(_)) {
                s += &format!("|{dt} ({})\n", sig.hash);
            }
        } else if let Some((ft, mt)) = d.crypto_message() {
            s += &format!("|{dt} ({ft}/{mt})\n");
        } else if let Some(f) = d.sbom_format() {
            s += &format!("|{dt} ({f})\n");
        } else {
            s += &format!("|{dt}\n");
        }
    }
    s.into_bytes()
}

/// `siftool info`. On a metadata error siftool prints nothing buffered and fails; the bytes
/// returned with the error are what siftool would have flushed before it (usually none).
pub fn info(d: &Descriptor) -> Result<Vec<u8>, (Vec<u8>, SifError)> {
    let mut tw = TabWriter::new(2);
    let mut line = |label: &str, value: &dyn std::fmt::Display| {
        tw.write(format!("\t{label}:\t{value}\n").as_bytes());
    };
    line("Data Type", &d.data_type);
    line("ID", &d.id);
    match d.group_id {
        0 => line("Group ID", &"NONE"),
        g => line("Group ID", &g),
    }
    match d.linked {
        None => line("Linked ID", &"NONE"),
        Some(Link::Group(g)) => line("Linked ID", &format!("{g} (G)")),
        Some(Link::Object(id)) => line("Linked ID", &id),
    }
    line("Offset", &d.offset);
    line("Size", &d.size);
    if d.created_at != ZERO_TIME {
        line("Created At", &go_time(d.created_at));
    }
    if d.modified_at != ZERO_TIME {
        line("Modified At", &go_time(d.modified_at));
    }
    if !d.name.is_empty() {
        line("Name", &d.name);
    }
    let failed = match d.data_type {
        DataType::Partition => {
            let p = d.partition().expect("a partition");
            line("Filesystem Type", &p.fstype);
            line("Partition Type", &p.parttype);
            line("Architecture", &p.arch);
            None
        }
        DataType::Signature => {
            let sig = d.signature().expect("a signature");
            if let super::HashType::Other(value) = sig.hash {
                Some(SifError::HashUnsupported { id: d.id, value })
            } else {
                line("Hash Type", &sig.hash);
                if let Some(fp) = sig.fingerprint {
                    let hex: String = fp.iter().map(|b| format!("{b:02X}")).collect();
                    line("Entity", &hex);
                }
                None
            }
        }
        DataType::CryptoMessage => {
            let (ft, mt) = d.crypto_message().expect("a crypto message");
            line("Format Type", &ft);
            line("Message Type", &mt);
            None
        }
        DataType::Sbom => {
            line("Format", &d.sbom_format().expect("an SBOM"));
            None
        }
        DataType::OciRootIndex | DataType::OciBlob => match d.oci_digest().expect("an OCI object") {
            Ok(digest) => {
                line("Digest", &digest);
                None
            }
            Err(e) => Some(e),
        },
        _ => None,
    };
    match failed {
        Some(e) => Err((tw.into_output(), e)),
        None => {
            tw.flush();
            Ok(tw.into_output())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readable_sizes() {
        for (n, s) in [
            (0, "0 B"),
            (1023, "1023 B"),
            (-1023, "-1023 B"),
            (1024, "1 KiB"),
            (2047, "2 KiB"),
            (1535, "1 KiB"),
            (1536, "2 KiB"),
            (28080, "27 KiB"),
            (8784, "9 KiB"),
            (270928, "265 KiB"),
            (1048064, "1024 KiB"),
            (1048576, "1 MiB"),
            (-1536, "-2 KiB"),
            (i64::MAX, "8 EiB"),
            (i64::MIN, "-8 EiB"),
        ] {
            assert_eq!(readable_size(n), s, "{n}");
        }
    }

    #[test]
    fn go_times() {
        assert_eq!(go_time(0), "1970-01-01 00:00:00 +0000 UTC");
        assert_eq!(go_time(1590175859), "2020-05-22 19:30:59 +0000 UTC");
        assert_eq!(go_time(1593475316), "2020-06-30 00:01:56 +0000 UTC");
        assert_eq!(go_time(946702800), "2000-01-01 05:00:00 +0000 UTC");
        assert_eq!(go_time(-1), "1969-12-31 23:59:59 +0000 UTC");
        assert_eq!(go_time(ZERO_TIME), "0001-01-01 00:00:00 +0000 UTC");
        assert_eq!(go_time(ZERO_TIME - 86400 * 366), "0000-01-01 00:00:00 +0000 UTC");
        assert_eq!(go_time(253402300800), "10000-01-01 00:00:00 +0000 UTC");
        // Absurd values do not panic.
        let _ = go_time(i64::MAX);
        let _ = go_time(i64::MIN);
    }
}
