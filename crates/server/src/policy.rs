//! The scheduling policy: queues, groups, quotas and priority caps, kept as one document an
//! admin reads and writes whole (with a version, so two admins never overwrite each other),
//! checked here and turned into the scheduler's `Config`.

use crate::store::Store;
use hearth_model::api::{self, SchedPolicy};
use hearth_model::net::{Cidr, Egress};
use hearth_model::parse_mib;
use hearth_sched::{Config, Group, Priority, Queue, Quota, Resources, User};
use std::collections::HashSet;

const KEY: &str = "sched_policy";

/// A checked policy: the document as the admin wrote it and the scheduler's view of it.
#[derive(Debug, Clone)]
pub struct Policy {
    pub doc: SchedPolicy,
    pub config: Config,
}

fn mib(what: &str, v: &Option<String>) -> Result<Option<u64>, String> {
    v.as_deref()
        .map(|s| parse_mib(s).map_err(|e| format!("{what}: {e}")))
        .transpose()
}

fn quota(what: &str, q: &api::Quota) -> Result<Quota, String> {
    Ok(Quota {
        max_cores: q.max_cores,
        max_memory_mib: mib(&format!("{what} max_memory"), &q.max_memory)?,
        max_running_jobs: q.max_running_jobs,
        max_queued_jobs: q.max_queued_jobs,
    })
}

fn check_name(what: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} name `{name}` is not valid: use 1-64 letters, digits, - or _"
        ))
    }
}

impl Policy {
    /// Where `user`'s tasks may connect beyond their own networks: what their group's and
    /// their own egress allow together, and for a job also its queue's (`queue`).
    pub fn egress(&self, user: &str, queue: Option<&str>) -> Egress {
        let group = self.config.group_of(user);
        let of_queue = queue
            .and_then(|q| self.doc.queues.iter().find(|s| s.name == q))
            .and_then(|s| s.egress.clone());
        let of_group = self
            .doc
            .groups
            .iter()
            .find(|g| g.name == group)
            .and_then(|g| g.egress.clone());
        let of_user = self.doc.users.get(user).and_then(|u| u.egress.clone());
        [of_queue, of_group, of_user]
            .into_iter()
            .flatten()
            .fold(Egress::Open, |all, e| all.and(&e))
    }

    /// Networks no task may reach.
    pub fn deny_networks(&self) -> &[Cidr] {
        &self.doc.deny_networks
    }
}

/// Checks a document completely and converts it; the error says what to fix.
pub fn check(doc: &SchedPolicy) -> Result<Config, String> {
    let mut config = Config::default();
    let mut names = HashSet::new();
    for q in &doc.queues {
        check_name("queue", &q.name)?;
        if !names.insert(q.name.as_str()) {
            return Err(format!("queue {} is defined twice", q.name));
        }
        if q.weight == 0 {
            return Err(format!("queue {}: weight must be at least 1", q.name));
        }
        let guaranteed = Resources::new(
            q.guaranteed.cores.unwrap_or(0),
            mib(
                &format!("queue {} guaranteed memory", q.name),
                &q.guaranteed.memory,
            )?
            .unwrap_or(0),
        );
        let max = match (&q.max.cores, &q.max.memory) {
            (None, None) => None,
            (cores, memory) => Some(Resources::new(
                cores.unwrap_or(u32::MAX),
                mib(&format!("queue {} max memory", q.name), memory)?.unwrap_or(u64::MAX),
            )),
        };
        if let Some(max) = max {
            if !guaranteed.fits_in(&max) {
                return Err(format!(
                    "queue {}: the guarantee ({guaranteed}) is more than the maximum ({max})",
                    q.name
                ));
            }
        }
        config.queues.push(Queue {
            name: q.name.clone(),
            weight: q.weight,
            guaranteed,
            max,
            best_effort: q.best_effort,
            open_to: q.open_to.clone(),
        });
    }
    let queue_known = |name: &str| name == hearth_sched::DEFAULT_QUEUE || names.contains(name);
    let mut groups = HashSet::new();
    for g in &doc.groups {
        check_name("group", &g.name)?;
        if !groups.insert(g.name.as_str()) {
            return Err(format!("group {} is defined twice", g.name));
        }
        if let Some(q) = &g.queue {
            if !queue_known(q) {
                return Err(format!(
                    "group {} sends its jobs to queue {q}, which does not exist: create it first",
                    g.name
                ));
            }
        }
        config.groups.push(Group {
            name: g.name.clone(),
            queue: g.queue.clone(),
            quota: quota(&format!("group {}", g.name), &g.quota)?,
            member_quota: quota(&format!("group {} members", g.name), &g.member_quota)?,
        });
    }
    for q in &doc.queues {
        for g in &q.open_to {
            if g != hearth_sched::DEFAULT_GROUP && !groups.contains(g.as_str()) {
                return Err(format!(
                    "queue {} is opened to group {g}, which does not exist: create it first",
                    q.name
                ));
            }
        }
    }
    for (name, u) in &doc.users {
        if let Some(g) = &u.group {
            if g != hearth_sched::DEFAULT_GROUP && !groups.contains(g.as_str()) {
                return Err(format!(
                    "user {name} is in group {g}, which does not exist: create it first"
                ));
            }
        }
        let max_priority = u
            .max_priority
            .as_deref()
            .map(|p| p.parse::<Priority>())
            .transpose()
            .map_err(|e| format!("user {name}: {e}"))?;
        config.users.push(User {
            name: name.clone(),
            group: u.group.clone(),
            quota: u
                .quota
                .as_ref()
                .map(|q| quota(&format!("user {name}"), q))
                .transpose()?,
            max_priority,
        });
    }
    if let Some(grace) = doc.preemption_grace_seconds {
        config.preemption_grace_ms = grace.saturating_mul(1000);
    }
    Ok(config)
}

pub fn load(store: &Store) -> anyhow::Result<Policy> {
    let doc: SchedPolicy = match store.meta(KEY)? {
        Some(text) => serde_json::from_str(&text)?,
        None => SchedPolicy::default(),
    };
    let config = check(&doc).map_err(anyhow::Error::msg)?;
    Ok(Policy { doc, config })
}

pub enum SaveError {
    Invalid(String),
    Stale { current: u64 },
    Store(rusqlite::Error),
}

/// Stores a new document if it was based on the current version; returns it with its new
/// version.
pub fn save(store: &Store, current: &Policy, mut doc: SchedPolicy) -> Result<Policy, SaveError> {
    if doc.version != current.doc.version {
        return Err(SaveError::Stale {
            current: current.doc.version,
        });
    }
    let config = check(&doc).map_err(SaveError::Invalid)?;
    doc.version = current.doc.version + 1;
    let text = serde_json::to_string(&doc).map_err(|e| SaveError::Invalid(e.to_string()))?;
    store.set_meta(KEY, &text).map_err(SaveError::Store)?;
    Ok(Policy { doc, config })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(json: &str) -> SchedPolicy {
        serde_json::from_str(json).expect("policy json")
    }

    #[test]
    fn a_policy_is_checked_and_converted() {
        let config = check(&doc(
            r#"{"queues":[{"name":"research","weight":2,"max":{"cores":8,"memory":"32g"}}],
                "groups":[{"name":"lab","queue":"research","member_quota":{"max_cores":4}}],
                "users":{"alice":{"group":"lab","max_priority":"normal"}}}"#,
        ))
        .expect("valid");
        assert_eq!(config.default_queue_of("alice"), "research");
        assert_eq!(config.user_quota("alice").max_cores, Some(4));
        assert_eq!(config.max_priority("alice"), Priority::Normal);
        assert_eq!(
            config.queue("research").and_then(|q| q.max),
            Some(Resources::new(8, 32 * 1024))
        );
    }

    #[test]
    fn a_queue_is_opened_to_further_groups() {
        let config = check(&doc(
            r#"{"queues":[{"name":"lab"},{"name":"research","open_to":["lab","default"]}],
                "groups":[{"name":"lab","queue":"lab"}],
                "users":{"alice":{"group":"lab"}}}"#,
        ))
        .expect("valid");
        assert!(config.may_submit_to("lab", "research"));
        assert!(config.may_submit_to("default", "research"));
        assert!(!config.may_submit_to("default", "lab"));
    }

    #[test]
    fn mistakes_are_named() {
        for (json, want) in [
            (
                r#"{"groups":[{"name":"lab","queue":"nope"}]}"#,
                "queue nope, which does not exist",
            ),
            (
                r#"{"users":{"alice":{"group":"nope"}}}"#,
                "group nope, which does not exist",
            ),
            (r#"{"queues":[{"name":"a"},{"name":"a"}]}"#, "defined twice"),
            (
                r#"{"queues":[{"name":"a","weight":0}]}"#,
                "weight must be at least 1",
            ),
            (
                r#"{"queues":[{"name":"a","max":{"memory":"4x"}}]}"#,
                "not a memory size",
            ),
            (
                r#"{"users":{"bob":{"max_priority":"urgent"}}}"#,
                "use low, normal or high",
            ),
            (r#"{"queues":[{"name":"a b"}]}"#, "is not valid"),
            (
                r#"{"queues":[{"name":"lab","open_to":["ml"]}]}"#,
                "queue lab is opened to group ml, which does not exist",
            ),
        ] {
            let e = check(&doc(json)).expect_err(json);
            assert!(e.contains(want), "{json}: {e}");
        }
    }
}
