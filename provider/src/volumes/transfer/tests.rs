use super::*;

/// One raw entry: path and link name are written into the header bytes as given (the
/// builder's own checks would refuse the hostile ones).
struct Raw {
    path: &'static str,
    kind: tar::EntryType,
    mode: u32,
    data: Vec<u8>,
    link: &'static str,
}

fn file(path: &'static str, data: &[u8]) -> Raw {
    Raw {
        path,
        kind: tar::EntryType::Regular,
        mode: 0o644,
        data: data.to_vec(),
        link: "",
    }
}

fn dir(path: &'static str) -> Raw {
    Raw {
        path,
        kind: tar::EntryType::Directory,
        mode: 0o755,
        data: Vec::new(),
        link: "",
    }
}

fn link(path: &'static str, target: &'static str) -> Raw {
    Raw {
        path,
        kind: tar::EntryType::Symlink,
        mode: 0o777,
        data: Vec::new(),
        link: target,
    }
}

fn archive(entries: &[Raw]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let mut header = tar::Header::new_gnu();
        {
            let gnu = header.as_gnu_mut().expect("gnu header");
            gnu.name[..e.path.len()].copy_from_slice(e.path.as_bytes());
            gnu.linkname[..e.link.len()].copy_from_slice(e.link.as_bytes());
        }
        header.set_entry_type(e.kind);
        header.set_mode(e.mode);
        header.set_size(e.data.len() as u64);
        header.set_cksum();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(&e.data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0; 1024]);
    out
}

fn check(entries: &[Raw], share: u64) -> Result<ArchiveSummary, ArchiveRefusal> {
    check_archive(std::io::Cursor::new(archive(entries)), share)
}

#[test]
fn a_volume_archive_passes() {
    let ok = check(
        &[
            dir("data/"),
            file("data/log", b"one\ntwo\n"),
            dir("data/sub/"),
            file("./data/sub/x", b"x"),
            link("data/sub/up", "../log"),
            link("data/here", "sub/./x"),
        ],
        1 << 20,
    )
    .expect("passes");
    assert_eq!(
        ok,
        ArchiveSummary {
            entries: 6,
            file_bytes: 9
        }
    );
}

#[test]
fn hostile_archives_are_refused_at_the_entry_that_breaks_a_rule() {
    let cases: Vec<(Vec<Raw>, &str)> = vec![
        (vec![file("../etc/passwd", b"x")], "climbs"),
        (vec![file("data/../../x", b"x")], "climbs"),
        (vec![file("/etc/passwd", b"x")], "absolute"),
        (vec![file("etc/passwd", b"x")], "outside data/"),
        (vec![file("datax/f", b"x")], "outside data/"),
        (vec![link("data/l", "/etc/shadow")], "leaves the volume"),
        (vec![link("data/l", "../x")], "leaves the volume"),
        (vec![link("data/a/l", "../../x")], "leaves the volume"),
        (vec![link("data/l", "")], "leaves the volume"),
        (
            vec![Raw {
                mode: 0o4755,
                ..file("data/su", b"x")
            }],
            "setuid",
        ),
        (
            vec![Raw {
                mode: 0o2755,
                ..file("data/sg", b"x")
            }],
            "setuid",
        ),
        (
            vec![Raw {
                mode: 0o1777,
                ..dir("data/t/")
            }],
            "setuid",
        ),
        (
            vec![Raw {
                kind: tar::EntryType::Link,
                link: "data/log",
                ..file("data/hard", b"")
            }],
            "hard link",
        ),
        (
            vec![Raw {
                kind: tar::EntryType::Char,
                ..file("data/null", b"")
            }],
            "character device",
        ),
        (
            vec![Raw {
                kind: tar::EntryType::Block,
                ..file("data/sda", b"")
            }],
            "block device",
        ),
        (
            vec![Raw {
                kind: tar::EntryType::Fifo,
                ..file("data/p", b"")
            }],
            "fifo",
        ),
        (
            vec![file("data/a", &[1; 600]), file("data/b", &[2; 500])],
            "over the volume's share",
        ),
        (
            vec![Raw {
                data: vec![0; 512],
                ..dir("data/d/")
            }],
            "with a size",
        ),
        (
            vec![pax(&[("size", "1"), ("size", "0")]), file("data/x", b"x")],
            "twice",
        ),
        (
            vec![Raw {
                kind: tar::EntryType::Continuous,
                ..file("data/c", b"x")
            }],
            "contiguous file",
        ),
    ];
    for (entries, want) in cases {
        let err = check(&entries, 1024).expect_err(want);
        assert!(err.to_string().contains(want), "{err} (wanted {want})");
    }
    let err = check_archive(
        std::io::Cursor::new(&b"not a tar at all, just text"[..]),
        1 << 20,
    );
    assert!(err.is_err(), "{err:?}");
}

#[test]
fn links_resolve_from_their_own_directory() {
    assert!(link_stays_inside(0, Path::new("log")));
    assert!(link_stays_inside(1, Path::new("../log")));
    assert!(!link_stays_inside(0, Path::new("../log")));
    assert!(link_stays_inside(2, Path::new("../../a/../b")));
    assert!(!link_stays_inside(2, Path::new("../../../b")));
    assert!(!link_stays_inside(5, Path::new("/data/x")));
    assert_eq!(in_volume_depth(Path::new("data")), Some(0));
    assert_eq!(in_volume_depth(Path::new("./data/a/b")), Some(2));
    assert_eq!(in_volume_depth(Path::new("data/./a")), Some(1));
    assert_eq!(in_volume_depth(Path::new("data/../a")), None);
    assert_eq!(in_volume_depth(Path::new("")), None);
}

#[test]
fn the_spool_counts_hashes_and_is_always_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool_dir = dir.path().join("spool");
    let body = b"hello volume";
    let sha = hex::encode(Sha256::digest(body));

    let mut spool = Spool::create(&spool_dir, body.len() as u64).expect("create");
    let path = spool.path().to_owned();
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&path).expect("exists").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    spool.write(&body[..5]).expect("part");
    spool.write(&body[5..]).expect("rest");
    spool.finish(&sha).expect("size and digest match");
    let mut read = String::new();
    spool
        .open()
        .expect("open")
        .read_to_string(&mut read)
        .expect("read");
    assert_eq!(read.as_bytes(), body);
    drop(spool);
    assert!(!path.exists(), "removed when done");

    // More than announced: refused at the chunk that passes it.
    let mut spool = Spool::create(&spool_dir, 4).expect("create");
    let path = spool.path().to_owned();
    assert!(matches!(
        spool.write(b"12345"),
        Err(SpoolError::TooLong { declared: 4 })
    ));
    drop(spool);
    assert!(!path.exists(), "removed after a refusal");

    // Less than announced, or another digest.
    let mut spool = Spool::create(&spool_dir, 5).expect("create");
    spool.write(b"1234").expect("write");
    assert!(matches!(
        spool.finish(&sha),
        Err(SpoolError::TooShort {
            got: 4,
            declared: 5
        })
    ));
    drop(spool);
    let mut spool = Spool::create(&spool_dir, body.len() as u64).expect("create");
    spool.write(b"hello VOLUME").expect("write");
    assert!(matches!(spool.finish(&sha), Err(SpoolError::Digest { .. })));
    drop(spool);
    assert_eq!(
        std::fs::read_dir(&spool_dir).expect("dir").count(),
        0,
        "nothing left in the spool"
    );
}

#[test]
fn cut_or_corrupted_archives_never_panic_the_check() {
    let good = archive(&[
        dir("data/"),
        file("data/log", &[b'x'; 700]),
        link("data/l", "log"),
    ]);
    for cut in 0..good.len() {
        let _ = check_archive(std::io::Cursor::new(&good[..cut]), 1 << 20);
    }
    // Every byte flipped in turn (headers, checksums, sizes, link names).
    for i in 0..good.len().min(2048) {
        let mut bad = good.clone();
        bad[i] ^= 0xa5;
        let _ = check_archive(std::io::Cursor::new(bad.as_slice()), 1 << 20);
    }
    // A size field claiming more than the share, with no data behind it.
    let mut huge = tar::Header::new_gnu();
    huge.as_gnu_mut().expect("gnu").name[..6].copy_from_slice(b"data/x");
    huge.set_entry_type(tar::EntryType::Regular);
    huge.set_mode(0o644);
    huge.set_size(1 << 40);
    huge.set_cksum();
    let err = check_archive(std::io::Cursor::new(huge.as_bytes().as_slice()), 1 << 20)
        .expect_err("over share");
    assert!(matches!(err, ArchiveRefusal::OverShare { .. }), "{err}");
}

/// A PAX header entry (`x`) carrying `records`, for the entry that follows.
fn pax(records: &[(&str, &str)]) -> Raw {
    let mut body = Vec::new();
    for (k, v) in records {
        let line = format!(" {k}={v}\n");
        // The length counts itself: find the fixed point.
        let mut len = line.len() + 1;
        while format!("{len}{line}").len() != len {
            len += 1;
        }
        body.extend_from_slice(format!("{len}{line}").as_bytes());
    }
    Raw {
        path: "data/PaxHeader",
        kind: tar::EntryType::XHeader,
        mode: 0o644,
        data: body,
        link: "",
    }
}

#[test]
fn pax_records_outside_the_closed_list_are_refused() {
    // What Go writes for a long name or a large id passes.
    check(
        &[
            pax(&[("path", "data/a-long-name"), ("uid", "4294967294")]),
            file("data/x", b"x"),
        ],
        1 << 20,
    )
    .expect("path and uid records pass");
    for key in [
        "GNU.sparse.realsize",
        "GNU.sparse.map",
        "SCHILY.xattr.security.capability",
        "LIBARCHIVE.xattr.user.x",
    ] {
        let err = check(&[pax(&[(key, "1")]), file("data/x", b"x")], 1 << 20).expect_err(key);
        assert!(
            matches!(&err, ArchiveRefusal::Pax { key: k, .. } if k == key),
            "{key}: {err}"
        );
    }
}

#[test]
fn a_checked_archive_is_rewritten_with_the_same_entries_and_no_pax() {
    let long = "data/a-name-longer-than-the-hundred-bytes-of-a-plain-header/and-then-some-more/and-more/file.txt";
    let mut input = archive(&[
        dir("data/"),
        file("data/log", b"one\ntwo\n"),
        link("data/l", "log"),
    ]);
    // A GNU long name, as Go writes it, for one more file.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(3);
    h.set_mode(0o600);
    h.set_uid(1000);
    h.set_gid(1000);
    b.append_data(&mut h, long, &b"abc"[..]).expect("long name");
    let long_tar = b.into_inner().expect("tar");
    input.truncate(input.len() - 1024);
    input.extend_from_slice(&long_tar);
    check_archive(std::io::Cursor::new(input.as_slice()), 1 << 20).expect("passes");

    let mut out = Vec::new();
    assert_eq!(
        rewrite_archive(input.as_slice(), &mut out).expect("rewritten"),
        4
    );
    check_archive(std::io::Cursor::new(out.as_slice()), 1 << 20).expect("still passes");
    let mut seen = Vec::new();
    for entry in tar::Archive::new(out.as_slice())
        .entries()
        .expect("entries")
    {
        let mut entry = entry.expect("entry");
        assert!(entry.pax_extensions().expect("pax").is_none());
        let mut body = Vec::new();
        entry.read_to_end(&mut body).expect("body");
        let h = entry.header();
        seen.push((
            entry.path().expect("path").display().to_string(),
            h.entry_type(),
            h.uid().expect("uid"),
            body,
        ));
    }
    assert_eq!(
        seen[1],
        (
            "data/log".into(),
            tar::EntryType::Regular,
            0,
            b"one\ntwo\n".to_vec()
        )
    );
    assert_eq!(seen[2].1, tar::EntryType::Symlink);
    assert_eq!(
        seen[3],
        (long.into(), tar::EntryType::Regular, 1000, b"abc".to_vec())
    );
}

#[test]
fn a_crash_leaves_spool_files_that_the_start_sweeps_but_kept_data_stays() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = dir.path().join("spool");
    let mut left = Spool::create(&spool, 3).expect("create");
    left.write(b"abc").expect("write");
    // As a crash would leave it: never dropped.
    std::mem::forget(left);
    let mut backup = Spool::create(&spool, 3).expect("create");
    backup.write(b"old").expect("write");
    let kept = backup
        .keep_as("pcv-x-blog-data.replaced-1.tar")
        .expect("kept");
    assert_eq!(sweep_spool(&spool), (1, 3));
    assert_eq!(std::fs::read(&kept).expect("still there"), b"old");
    assert_eq!(sweep_spool(&dir.path().join("absent")), (0, 0));
}
