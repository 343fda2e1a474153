//! The client's config file: which server, as whom, with which token. `--config` or
//! `HEARTH_CONFIG` picks another file, so one shell can act as several users.

use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientConfig {
    pub server: String,
    pub user: String,
    pub token: String,
}

pub fn default_path() -> PathBuf {
    if let Ok(p) = std::env::var("HEARTH_CONFIG") {
        return PathBuf::from(p);
    }
    let base = std::env::var("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|_| std::env::var("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|_| PathBuf::from("."));
    base.join("hearth").join("config.json")
}

pub fn load(path: &Path) -> Result<ClientConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            anyhow!(
                "not logged in (no {}): run `hearth login --server URL --user NAME`",
                path.display()
            )
        } else {
            anyhow!("reading {}: {e}", path.display())
        }
    })?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a Hearth client config: log in again to rewrite it",
            path.display()
        )
    })
}

/// Writes the config readable by its owner only (it holds a token), atomically.
pub fn save(path: &Path, cfg: &ClientConfig) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(serde_json::to_string_pretty(cfg)?.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
