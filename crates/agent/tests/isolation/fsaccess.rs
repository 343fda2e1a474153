use crate::common::Env;
use hearth_agent::fsaccess::{self, Kind};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() == 0 };
    if !root {
        eprintln!("skipped: needs root");
    }
    root
}

fn write(user: &hearth_agent::LinuxUser, rel: &str, content: &[u8]) {
    let mut tmp = fsaccess::create_temp(user, Path::new(rel)).expect("create");
    tmp.file.write_all(content).expect("write");
    tmp.commit().expect("commit");
}

fn read(user: &hearth_agent::LinuxUser, rel: &str) -> std::io::Result<String> {
    let mut text = String::new();
    fsaccess::open_read(user, Path::new(rel))?.read_to_string(&mut text)?;
    Ok(text)
}

#[test]
fn a_user_reads_their_own_files_and_nothing_outside_their_workspace() {
    if !is_root() {
        return;
    }
    let mut env = Env::new("fs-read");
    let alice = env.user("alice");
    let bob = env.user("bob");
    write(&alice, "notes.txt", b"alice's notes");
    assert_eq!(
        read(&alice, "notes.txt").expect("alice reads"),
        "alice's notes"
    );
    assert_eq!(
        fsaccess::kind(&alice, Path::new("notes.txt")).expect("kind"),
        Kind::File
    );
    // `..` is refused outright; a symlink into Bob's workspace is refused by the kernel.
    let err = read(&bob, "../alice/notes.txt").expect_err("no ..");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    std::os::unix::fs::symlink(alice.home.join("notes.txt"), bob.home.join("alices"))
        .expect("symlink");
    let err = read(&bob, "alices").expect_err("bob must not read it");
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);
}

#[test]
fn a_symlink_planted_in_a_workspace_leads_nowhere() {
    if !is_root() {
        return;
    }
    let mut env = Env::new("fs-link");
    let alice = env.user("alice");
    std::os::unix::fs::symlink("/etc/shadow", alice.home.join("shadow")).expect("symlink");
    let err = read(&alice, "shadow").expect_err("must not read /etc/shadow");
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);
    // The host's /proc is world-readable, and shows other users' command lines: a link to
    // it must not work either.
    std::os::unix::fs::symlink("/proc", alice.home.join("p")).expect("symlink");
    let err = fsaccess::list_dir(&alice, Path::new("p")).expect_err("must not list /proc");
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);
    let err = read(&alice, "p/1/cmdline").expect_err("must not read /proc");
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);
    // A link that stays inside the workspace is fine.
    write(&alice, "real.txt", b"ok");
    std::os::unix::fs::symlink("real.txt", alice.home.join("alias")).expect("symlink");
    assert_eq!(read(&alice, "alias").expect("inside link"), "ok");
    // A FIFO is refused at once instead of hanging the caller.
    let fifo = std::ffi::CString::new(alice.home.join("fifo").to_string_lossy().as_bytes())
        .expect("cstring");
    // SAFETY: a valid path; creates a FIFO owned by root in alice's dir.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o666) }, 0);
    let err = read(&alice, "fifo").expect_err("fifo");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

#[test]
fn files_made_for_a_user_are_theirs_and_listed_removed_as_them() {
    if !is_root() {
        return;
    }
    let mut env = Env::new("fs-write");
    let alice = env.user("alice");
    write(&alice, "jobs/etl/main.py", b"print(1)\n");
    std::os::unix::fs::symlink("/etc", alice.home.join("etc-link")).expect("symlink");
    let dir = alice.home.join("jobs/etl");
    let file = std::fs::metadata(dir.join("main.py")).expect("stat");
    assert_eq!((file.uid(), file.gid()), (alice.uid, alice.gid));
    assert_eq!(std::fs::metadata(&dir).expect("stat").uid(), alice.uid);

    let listing = fsaccess::list_dir(&alice, Path::new("")).expect("list");
    let names: Vec<(&str, bool)> = listing
        .iter()
        .map(|e| (e.name.as_str(), e.is_dir))
        .collect();
    assert_eq!(names, [("etc-link", false), ("jobs", true)]);
    let inner = fsaccess::list_dir(&alice, Path::new("jobs/etl")).expect("list");
    assert_eq!((inner[0].name.as_str(), inner[0].size), ("main.py", 9));
    assert!(inner[0].mtime_ms > 1_600_000_000_000);

    // An upload that is not committed leaves nothing behind.
    let mut tmp = fsaccess::create_temp(&alice, Path::new("half.txt")).expect("create");
    tmp.file.write_all(b"half").expect("write");
    drop(tmp);
    assert_eq!(
        fsaccess::list_dir(&alice, Path::new(""))
            .expect("list")
            .len(),
        2
    );

    fsaccess::remove(&alice, Path::new("etc-link")).expect("remove link");
    assert!(Path::new("/etc/passwd").exists());
    fsaccess::remove(&alice, Path::new("jobs")).expect("remove tree");
    assert!(fsaccess::list_dir(&alice, Path::new(""))
        .expect("list")
        .is_empty());
}
