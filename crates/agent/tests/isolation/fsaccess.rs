use crate::common::Env;
use hearth_agent::fsaccess;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() == 0 };
    if !root {
        eprintln!("skipped: needs root");
    }
    root
}

#[test]
fn a_user_reads_their_own_files_but_not_another_users() {
    if !is_root() {
        return;
    }
    let mut env = Env::new("fs-read");
    let alice = env.user("alice");
    let bob = env.user("bob");
    let path = alice.home.join("notes.txt");
    fsaccess::create_file(&alice, &path)
        .and_then(|mut f| f.write_all(b"alice's notes"))
        .expect("alice writes");
    let mut text = String::new();
    fsaccess::open_read(&alice, &path)
        .and_then(|mut f| f.read_to_string(&mut text))
        .expect("alice reads");
    assert_eq!(text, "alice's notes");
    let err = fsaccess::open_read(&bob, &path).expect_err("bob must not read it");
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);
}

#[test]
fn a_symlink_planted_in_a_workspace_leads_nowhere_the_user_could_not_go() {
    if !is_root() {
        return;
    }
    let mut env = Env::new("fs-link");
    let alice = env.user("alice");
    let link = alice.home.join("shadow");
    std::os::unix::fs::symlink("/etc/shadow", &link).expect("symlink");
    let err = fsaccess::open_read(&alice, &link).expect_err("must not read /etc/shadow");
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);

    // Group root is root's supplementary group: it must not come along either.
    let group_root = env.root.join("group-root.txt");
    std::fs::write(&group_root, "root's group only").expect("write");
    std::fs::set_permissions(&group_root, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let link = alice.home.join("group-root");
    std::os::unix::fs::symlink(&group_root, &link).expect("symlink");
    let err = fsaccess::open_read(&alice, &link).expect_err("must not read group-root file");
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);
}

#[test]
fn files_made_for_a_user_are_theirs_and_listed_removed_as_them() {
    if !is_root() {
        return;
    }
    let mut env = Env::new("fs-write");
    let alice = env.user("alice");
    let dir = alice.home.join("jobs/etl");
    fsaccess::create_dir_all(&alice, &dir).expect("mkdir");
    fsaccess::create_file(&alice, &dir.join("main.py"))
        .and_then(|mut f| f.write_all(b"print(1)\n"))
        .expect("write");
    std::os::unix::fs::symlink("/etc", alice.home.join("etc-link")).expect("symlink");
    let file = std::fs::metadata(dir.join("main.py")).expect("stat");
    assert_eq!(
        (file.uid(), file.gid(), file.mode() & 0o777),
        (alice.uid, alice.gid, 0o644)
    );
    assert_eq!(std::fs::metadata(&dir).expect("stat").uid(), alice.uid);

    let listing = fsaccess::list_dir(&alice, &alice.home).expect("list");
    let names: Vec<(&str, bool)> = listing
        .iter()
        .map(|e| (e.name.as_str(), e.is_dir))
        .collect();
    assert_eq!(names, [("etc-link", false), ("jobs", true)]);
    let inner = fsaccess::list_dir(&alice, &dir).expect("list");
    assert_eq!((inner[0].name.as_str(), inner[0].size), ("main.py", 9));
    assert!(inner[0].mtime_ms > 1_600_000_000_000);

    fsaccess::remove(&alice, &alice.home.join("etc-link")).expect("remove link");
    assert!(std::path::Path::new("/etc/passwd").exists());
    fsaccess::remove(&alice, &alice.home.join("jobs")).expect("remove tree");
    assert!(fsaccess::list_dir(&alice, &alice.home)
        .expect("list")
        .is_empty());

    // Outside what alice owns, she cannot create or remove anything.
    let err = fsaccess::create_file(&alice, &env.root.join("x")).expect_err("root's dir");
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);
    let bobs = env.user("bob");
    std::fs::write(bobs.home.join("keep"), "").expect("write");
    let err = fsaccess::remove(&alice, &bobs.home.join("keep")).expect_err("bob's file");
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);
    let err = fsaccess::list_dir(&alice, &bobs.home).expect_err("bob's dir");
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);
}
