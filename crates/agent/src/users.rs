//! Linux accounts for Hearth users: a system user and group per Hearth user, with a uid
//! allocated from a configured range, home = the user's workspace (Java and Hadoop need a
//! real passwd entry with an absolute home, see shared/notes/isolation.md).

use crate::{Error, LinuxUser, Result};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The uids Hearth may allocate, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UidRange {
    pub first: u32,
    pub last: u32,
}

impl Default for UidRange {
    fn default() -> Self {
        UidRange {
            first: 200_000,
            last: 299_999,
        }
    }
}

/// shadow-utils' exit codes we act on (see groupadd(8), useradd(8), userdel(8), groupdel(8)).
const ID_TAKEN: i32 = 4;
const NAME_TAKEN: i32 = 9;
const DOES_NOT_EXIST: i32 = 6;
/// useradd's "specified group doesn't exist".
const NO_SUCH_GROUP: i32 = 6;
/// groupdel's "can't remove user's primary group".
const PRIMARY_GROUP: i32 = 8;

/// How long we retry while another process holds the lock on /etc/passwd or /etc/group
/// (shadow-utils gives up at once with "cannot lock ...; try again later").
const LOCK_RETRY: Duration = Duration::from_secs(20);

/// Bounds the retries when other processes keep taking ids or groups from under us.
const MAX_ATTEMPTS: u32 = 200;

/// Serialises our own account changes; other processes are handled by retrying.
static ACCOUNTS: Mutex<()> = Mutex::new(());

/// Creates a Linux user and group for the Hearth user `hearth_name` with a uid (= gid) from
/// `range` that is free on this machine, and its workspace `home` owned by it with mode
/// 0700. Safe against other Hearth instances allocating at the same time.
pub fn create_user(hearth_name: &str, home: &Path, range: UidRange) -> Result<LinuxUser> {
    if range.first > range.last {
        return Err(Error::Other(format!(
            "empty uid range {}-{}",
            range.first, range.last
        )));
    }
    if !home.is_absolute() {
        return Err(Error::Other(format!(
            "the workspace {} must be an absolute path (it becomes the passwd home)",
            home.display()
        )));
    }
    let home_str = home
        .to_str()
        .ok_or_else(|| Error::Other(format!("the workspace {} is not UTF-8", home.display())))?;
    // useradd refuses these in the comment field, and a newline would corrupt /etc/passwd.
    let comment_name: String = hearth_name
        .chars()
        .map(|c| if c == ':' || c.is_control() { '_' } else { c })
        .collect();
    let comment = format!("hearth user {comment_name}");

    let user = {
        let _guard = ACCOUNTS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        allocate(range, home_str, &comment, home)?
    };
    if let Err(e) = ensure_workspace(&user) {
        let _ = remove_user(&user);
        return Err(e);
    }
    Ok(user)
}

fn allocate(range: UidRange, home_str: &str, comment: &str, home: &Path) -> Result<LinuxUser> {
    let mut uid = range.first;
    for _ in 0..MAX_ATTEMPTS {
        let taken = TakenIds::read()?;
        uid = match (uid..=range.last).find(|&id| !taken.holds(id)) {
            Some(id) => id,
            None => {
                return Err(Error::Other(format!(
                    "no free uid left in {}-{}: every uid or gid there is taken \
                     (see /etc/passwd and /etc/group)",
                    range.first, range.last
                )))
            }
        };
        let name = format!("hearth{uid}");
        let id = uid.to_string();
        let group = run_locked(
            "groupadd",
            &["--system", "--gid", &id, &name],
            &format!("creating group {name} (gid {uid})"),
        )?;
        if !group.status.success() {
            let code = group.status.code();
            if code == Some(ID_TAKEN) || code == Some(NAME_TAKEN) {
                // Another instance took it since we read the files.
                uid = next(uid, range)?;
                continue;
            }
            return Err(failed(
                &format!("creating group {name} (gid {uid})"),
                &group,
            ));
        }
        let added = useradd(&name, uid, home_str, comment);
        let added = match added {
            Ok(out) => out,
            Err(e) => {
                delete_group(&name);
                return Err(e);
            }
        };
        if !added.status.success() {
            let code = added.status.code();
            if code == Some(NO_SUCH_GROUP) {
                // Another instance removing its own hearthN user deleted "our" group, just
                // made under the same name: try this uid again.
                continue;
            }
            delete_group(&name);
            if code == Some(ID_TAKEN) || code == Some(NAME_TAKEN) {
                uid = next(uid, range)?;
                continue;
            }
            return Err(failed(&format!("creating user {name} (uid {uid})"), &added));
        }
        return Ok(LinuxUser {
            uid,
            gid: uid,
            name,
            home: home.to_path_buf(),
        });
    }
    Err(Error::Other(format!(
        "could not create a user in {}-{}: {MAX_ATTEMPTS} attempts collided with other \
         processes changing /etc/passwd and /etc/group",
        range.first, range.last
    )))
}

fn next(uid: u32, range: UidRange) -> Result<u32> {
    if uid >= range.last {
        return Err(Error::Other(format!(
            "no free uid left in {}-{} (others were allocating at the same time)",
            range.first, range.last
        )));
    }
    Ok(uid + 1)
}

fn delete_group(name: &str) {
    match run_locked("groupdel", &[name], &format!("removing group {name}")) {
        Ok(out)
            if out.status.success()
                || out.status.code() == Some(DOES_NOT_EXIST)
                || out.status.code() == Some(PRIMARY_GROUP) => {}
        Ok(out) => tracing::warn!("{}", failed(&format!("removing group {name}"), &out)),
        Err(e) => tracing::warn!("{e}"),
    }
}

/// Removes the Linux user and group (not the workspace).
pub fn remove_user(user: &LinuxUser) -> Result<()> {
    let _guard = ACCOUNTS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let what = format!("removing user {} (uid {})", user.name, user.uid);
    let out = run_locked("userdel", &[&user.name], &what)?;
    if !out.status.success() && out.status.code() != Some(DOES_NOT_EXIST) {
        return Err(failed(&what, &out));
    }
    // userdel removes the user's group too where login.defs has USERGROUPS_ENAB (Debian's
    // default). Only otherwise is a group of that name left, and then it is ours, unless
    // another instance just took the freed id again: its new user's primary group (8) is
    // left alone; a group it made but has no user in yet would go, and its useradd retries.
    let taken = TakenIds::read()?;
    if !taken.names.contains(&user.name) {
        return Ok(());
    }
    let what = format!("removing group {}", user.name);
    let out = run_locked("groupdel", &[&user.name], &what)?;
    let code = out.status.code();
    if !out.status.success() && code != Some(DOES_NOT_EXIST) && code != Some(PRIMARY_GROUP) {
        return Err(failed(&what, &out));
    }
    Ok(())
}

/// The passwd name of `uid` on this machine, if it has one.
fn passwd_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let id = f.nth(1)?.parse::<u32>().ok()?;
        (id == uid).then(|| name.to_string())
    })
}

/// Makes sure this machine has the Linux user `name` with exactly `uid` (= gid), as the
/// server allocated it, so that files a task writes carry the same owner on every node.
/// Its workspace on this machine is `home` (0700, the user's).
pub fn ensure_user(name: &str, uid: u32, home: &Path) -> Result<LinuxUser> {
    let user = LinuxUser {
        uid,
        gid: uid,
        name: name.to_string(),
        home: home.to_path_buf(),
    };
    let valid = name
        .strip_prefix("hearth")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    if !valid || uid < 1000 {
        return Err(Error::Other(format!(
            "refusing to run a task as `{name}` (uid {uid}): not a Hearth user"
        )));
    }
    {
        let _guard = ACCOUNTS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match passwd_name(uid) {
            Some(existing) if existing == name => {}
            Some(existing) => {
                return Err(Error::Other(format!(
                    "uid {uid} belongs to `{existing}` on this machine, not to `{name}`: give Hearth a --uid-range that is free on every node"
                )))
            }
            None => {
                let id = uid.to_string();
                let home_str = home.to_str().ok_or_else(|| {
                    Error::Other(format!("the workspace {} is not UTF-8", home.display()))
                })?;
                let group = run_locked(
                    "groupadd",
                    &["--system", "--gid", &id, name],
                    &format!("creating group {name} (gid {uid})"),
                )?;
                if !group.status.success() && group.status.code() != Some(NAME_TAKEN) {
                    return Err(failed(&format!("creating group {name} (gid {uid})"), &group));
                }
                let added = useradd(name, uid, home_str, "hearth user")?;
                if !added.status.success() {
                    return Err(failed(&format!("creating user {name} (uid {uid})"), &added));
                }
            }
        }
    }
    ensure_workspace(&user)?;
    Ok(user)
}

/// Makes sure `user.home` exists, is owned by the user and is mode 0700.
pub fn ensure_workspace(user: &LinuxUser) -> Result<()> {
    let home = &user.home;
    std::fs::create_dir_all(home)
        .map_err(|e| Error::io(format!("creating workspace {}", home.display()), e))?;
    std::os::unix::fs::chown(home, Some(user.uid), Some(user.gid)).map_err(|e| {
        Error::io(
            format!(
                "giving workspace {} to {} (uid {})",
                home.display(),
                user.name,
                user.uid
            ),
            e,
        )
    })?;
    std::fs::set_permissions(home, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::io(format!("making workspace {} mode 0700", home.display()), e))
}

/// Runs a shadow-utils command, retrying while another process holds the account files'
/// lock. Returns the output of the last try whatever its status; Err only if it cannot run.
fn run_locked(program: &str, args: &[&str], what: &str) -> Result<Output> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(20);
    loop {
        let out = Command::new(program)
            .args(args)
            .env("LC_ALL", "C")
            .output()
            .map_err(|e| Error::io(format!("{what}: cannot run {program}"), e))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        let locked = !out.status.success()
            && (stderr.contains("cannot lock") || stderr.contains("try again later"));
        if !locked || start.elapsed() > LOCK_RETRY {
            return Ok(out);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

fn failed(what: &str, out: &Output) -> Error {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stderr = stderr.trim();
    let detail = if stderr.is_empty() {
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    } else {
        stderr.to_string()
    };
    Error::Other(format!("{what}: {} ({})", detail, out.status))
}

/// Ids (and the names `hearthN`) already in /etc/passwd or /etc/group. Reading the files,
/// not NSS: useradd and groupadd only check the local files too.
struct TakenIds {
    ids: std::collections::HashSet<u32>,
    names: std::collections::HashSet<String>,
}

impl TakenIds {
    fn read() -> Result<TakenIds> {
        let mut taken = TakenIds {
            ids: Default::default(),
            names: Default::default(),
        };
        for file in ["/etc/passwd", "/etc/group"] {
            let text = std::fs::read_to_string(file)
                .map_err(|e| Error::io(format!("reading {file}"), e))?;
            for line in text.lines() {
                let mut fields = line.split(':');
                let name = fields.next().unwrap_or_default();
                let id = fields.nth(1).and_then(|f| f.parse::<u32>().ok());
                if let Some(id) = id {
                    taken.ids.insert(id);
                }
                if !name.is_empty() {
                    taken.names.insert(name.to_string());
                }
            }
        }
        Ok(taken)
    }

    fn holds(&self, id: u32) -> bool {
        self.ids.contains(&id) || self.names.contains(&format!("hearth{id}"))
    }
}

/// `useradd` for a Hearth user: a system account with its own group (gid = uid), the
/// workspace as home (made by Hearth, not useradd), and no login shell.
fn useradd(name: &str, uid: u32, home: &str, comment: &str) -> Result<std::process::Output> {
    let id = uid.to_string();
    run_locked(
        "useradd",
        &[
            "--system",
            "--uid",
            &id,
            "--gid",
            &id,
            "--home-dir",
            home,
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            "--comment",
            comment,
            name,
        ],
        &format!("creating user {name} (uid {uid})"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_messages_carry_the_commands_stderr() {
        let out = Command::new("/bin/sh")
            .args(["-c", "echo 'groupadd: GID 5 is not unique' >&2; exit 4"])
            .output()
            .expect("sh");
        let msg = failed("creating group hearth5 (gid 5)", &out).to_string();
        assert!(msg.starts_with("creating group hearth5 (gid 5): groupadd: GID 5 is not unique"));
        assert!(msg.contains("4"), "{msg}");
    }

    #[test]
    fn relative_workspaces_are_refused() {
        let err = create_user("alice", Path::new("ws/alice"), UidRange::default());
        assert!(err.is_err());
    }
}
