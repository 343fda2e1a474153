use crate::common::{unique, Env, UIDS};
use hearth_agent::users::{self, UidRange};
use std::os::unix::fs::MetadataExt;
use std::process::Command;

fn getent(db: &str, key: &str) -> Option<String> {
    let out = Command::new("getent")
        .args([db, key])
        .output()
        .expect("getent");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn each_user_gets_a_free_uid_a_passwd_entry_and_a_private_workspace() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root");
        return;
    }
    let mut env = Env::new("users");
    let alice = env.user("alice");
    let bob = env.user("bob");
    assert_ne!(alice.uid, bob.uid);
    for user in [&alice, &bob] {
        assert!((UIDS.first..=UIDS.last).contains(&user.uid));
        assert_eq!(user.gid, user.uid);
        assert_eq!(user.name, format!("hearth{}", user.uid));
        let entry = getent("passwd", &user.name).expect("passwd entry");
        let fields: Vec<&str> = entry.split(':').collect();
        assert_eq!(fields[2], user.uid.to_string());
        assert_eq!(fields[5], user.home.display().to_string());
        assert_eq!(fields[6], "/usr/sbin/nologin");
        assert!(getent("group", &user.name).is_some());
        let ws = std::fs::metadata(&user.home).expect("workspace");
        assert_eq!(
            (ws.uid(), ws.gid(), ws.mode() & 0o777),
            (user.uid, user.gid, 0o700)
        );
    }
}

#[test]
fn removing_a_user_removes_account_and_group_and_may_be_repeated() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root");
        return;
    }
    let home = std::path::PathBuf::from("/tmp").join(unique("hearth-agent-rm"));
    // A range of its own: elsewhere another test may take the freed name at once.
    let range = UidRange {
        first: 299_990,
        last: 299_999,
    };
    let user = users::create_user("carol", &home, range).expect("create");
    users::remove_user(&user).expect("remove");
    assert!(getent("passwd", &user.name).is_none());
    assert!(getent("group", &user.name).is_none());
    users::remove_user(&user).expect("removing again is fine");
    assert!(home.exists(), "the workspace stays");
    let _ = std::fs::remove_dir_all(&home);
}

#[test]
fn users_created_at_the_same_time_get_different_uids() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root");
        return;
    }
    let base = std::path::PathBuf::from("/tmp").join(unique("hearth-agent-many"));
    let made: Vec<_> = (0..4)
        .map(|i| {
            let home = base.join(format!("u{i}"));
            std::thread::spawn(move || users::create_user(&format!("u{i}"), &home, UIDS))
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().expect("thread"))
        .collect();
    let mut uids: Vec<u32> = made
        .iter()
        .filter_map(|r| r.as_ref().ok().map(|u| u.uid))
        .collect();
    for user in made.iter().flatten() {
        let _ = users::remove_user(user);
    }
    let _ = std::fs::remove_dir_all(&base);
    assert_eq!(uids.len(), 4, "{made:?}");
    uids.sort_unstable();
    uids.dedup();
    assert_eq!(uids.len(), 4);
}
