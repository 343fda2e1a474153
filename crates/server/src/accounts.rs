//! Hearth accounts and the Linux identities behind them. Creating a user makes their Linux
//! user and private workspace first and records them second, undoing the first if the
//! second fails, so no half-made account is left.

use crate::auth;
use crate::error::{ApiError, ApiResult};
use crate::store::{now_ms, UserRow};
use crate::App;
use hearth_agent::LinuxUser;
use std::os::unix::fs::PermissionsExt;

impl UserRow {
    pub fn linux(&self, app: &App) -> LinuxUser {
        LinuxUser {
            uid: self.uid,
            gid: self.gid,
            name: self.linux_name.clone(),
            home: app.cfg.workspace(&self.name),
        }
    }

    /// The uid this user's tasks run as: their own, or Hearth's when isolation is off.
    pub fn task_uid(&self, app: &App) -> u32 {
        if app.isolation.enabled {
            self.uid
        } else {
            // SAFETY: geteuid cannot fail.
            unsafe { libc::geteuid() }
        }
    }
}

/// Creates a user; returns it and the password if one was generated.
pub fn create(
    app: &App,
    name: &str,
    admin: bool,
    password: Option<String>,
) -> ApiResult<(UserRow, Option<String>)> {
    auth::check_user_name(name).map_err(|m| ApiError::bad_request("invalid_name", m))?;
    if let Some(p) = &password {
        if p.chars().count() < 8 {
            return Err(ApiError::bad_request(
                "weak_password",
                "the password is too short: use at least 8 characters, or omit it to have one generated",
            ));
        }
    }
    if app.store.user_by_name(name)?.is_some() {
        return Err(ApiError::conflict(
            "user_exists",
            format!("a user named {name} already exists"),
        ));
    }
    let home = app.cfg.workspace(name);
    let linux = if app.isolation.enabled {
        hearth_agent::users::create_user(name, &home, app.cfg.uid_range)
            .map_err(|e| ApiError::internal("creating the Linux user", e))?
    } else {
        // Without root every job runs as Hearth's own user.
        std::fs::create_dir_all(&home)
            .and_then(|_| std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)))
            .map_err(|e| ApiError::internal("creating the workspace", e))?;
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        LinuxUser {
            uid,
            gid,
            name: std::env::var("USER").unwrap_or_else(|_| "hearth".into()),
            home,
        }
    };
    let generated = password.is_none().then(auth::generate_password);
    let secret = password.or_else(|| generated.clone()).unwrap_or_default();
    let row = UserRow {
        id: 0,
        name: name.to_string(),
        admin,
        password_hash: auth::hash_secret(&secret),
        uid: linux.uid,
        gid: linux.gid,
        linux_name: linux.name.clone(),
        created_at: now_ms(),
    };
    match app.store.insert_user(&row) {
        Ok(id) => Ok((UserRow { id, ..row }, generated)),
        Err(e) => {
            if app.isolation.enabled {
                let _ = hearth_agent::users::remove_user(&linux);
            }
            Err(e.into())
        }
    }
}

/// Removes a user with no active jobs. Their workspace is moved aside, not deleted, so an
/// admin can still recover what they wrote.
pub fn remove(app: &App, user: &UserRow) -> ApiResult<String> {
    if !app.store.delete_idle_user(user.id)? {
        return Err(ApiError::conflict(
            "user_has_jobs",
            format!(
                "{} still has queued or running jobs: cancel them first (hearth jobs --all)",
                user.name
            ),
        ));
    }
    app.tokens.forget_user(user.id);
    let home = app.cfg.workspace(&user.name);
    let kept = app
        .cfg
        .workspaces_dir()
        .join(format!(".removed-{}-{}", user.name, now_ms()));
    // Root's from now on: the freed uid may go to a new user, who must not reach it.
    if std::fs::rename(&home, &kept).is_ok() {
        let _ = std::os::unix::fs::chown(&kept, Some(0), Some(0));
        let _ = std::fs::set_permissions(&kept, std::fs::Permissions::from_mode(0o700));
    }
    if app.isolation.enabled {
        hearth_agent::users::remove_user(&user.linux(app))
            .map_err(|e| ApiError::internal("removing the Linux user", e))?;
    }
    Ok(kept.display().to_string())
}

/// On the first start, creates the admin account and says once how to log in.
pub fn bootstrap_admin(app: &App) -> anyhow::Result<()> {
    if app.store.user_count()? > 0 {
        return Ok(());
    }
    let (user, generated) = create(app, "admin", true, app.cfg.admin_password.clone())
        .map_err(|e| anyhow::anyhow!("creating the admin account: {}", e.message))?;
    let url = format!("http://{}", app.cfg.listen);
    eprintln!("Created the admin account `{}`.", user.name);
    if let Some(p) = generated {
        eprintln!("  Its password (shown only this once): {p}");
    }
    eprintln!("  Log in with: hearth login --server {url} --user admin");
    Ok(())
}
