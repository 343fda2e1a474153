//! What an admin configures: queues, groups, users and their quotas. Everything is
//! optional: with an empty [`Config`] every user is in the group `default`, whose jobs go to
//! the queue `default`, with no limits.

use crate::priority::Priority;
use crate::resources::Resources;

/// The queue jobs go to when nothing else says where.
pub const DEFAULT_QUEUE: &str = "default";
/// The group of users who are not configured, or configured without a group.
pub const DEFAULT_GROUP: &str = "default";

/// The admin's scheduling policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Configured queues; others named by groups or jobs, and `default`, exist implicitly.
    pub queues: Vec<Queue>,
    /// Configured groups; a group not listed has no quota and sends jobs to `default`.
    pub groups: Vec<Group>,
    /// Configured users; a user not listed is in group `default` with no own limits.
    pub users: Vec<User>,
    /// Time between SIGTERM and SIGKILL for a preempted job; copied into each
    /// [`crate::Preemption`].
    pub preemption_grace_ms: u64,
    /// A waiting job's priority rises one level for every `aging_ms` it has waited (up to
    /// high), so that nothing starves behind a stream of higher-priority work. 0 turns
    /// aging off.
    pub aging_ms: i64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            queues: Vec::new(),
            groups: Vec::new(),
            users: Vec::new(),
            preemption_grace_ms: 30_000,
            aging_ms: 30 * 60_000,
        }
    }
}

/// A queue shares the cluster with other queues by weight. A queue not listed but named by
/// a group or job (including `default`) has weight 1, no guarantee and no maximum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queue {
    /// What jobs and groups call it (`--queue NAME`).
    pub name: String,
    /// Queues get the cluster in proportion to their weights (weighted DRF). 0 counts as 1.
    pub weight: u32,
    /// What the queue gets whenever it asks, before queues beyond their own guarantee, by
    /// preempting preemptible work of such queues if need be. Zero: no guarantee.
    pub guaranteed: Resources,
    /// What the queue's jobs may hold together at most.
    pub max: Option<Resources>,
    /// Every job in a best-effort queue is preemptible, whatever it asked for.
    pub best_effort: bool,
    /// Groups whose members may submit here besides the groups whose own queue this is.
    pub open_to: Vec<String>,
}

impl Queue {
    /// A queue of weight 1 with no guarantee and no maximum.
    pub fn new(name: impl Into<String>) -> Queue {
        Queue {
            name: name.into(),
            weight: 1,
            guaranteed: Resources::ZERO,
            max: None,
            best_effort: false,
            open_to: Vec::new(),
        }
    }
}

/// Users belong to one group; a group sends its jobs to one queue and may limit what its
/// members hold together and each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Group {
    /// What users' `group` calls it.
    pub name: String,
    /// Where members' jobs go unless a job names a queue; `None` is `default`.
    pub queue: Option<String>,
    /// Limits on all members together.
    pub quota: Quota,
    /// Limits on each member, unless the user has a quota of their own.
    pub member_quota: Quota,
}

/// A user's place in the policy: their group, own limits and priority cap.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct User {
    /// The login name jobs carry in `PendingJob::user` and `Allocation::user`.
    pub name: String,
    /// `None` is the group `default`.
    pub group: Option<String>,
    /// The user's own limits; `None` takes the group's `member_quota`.
    pub quota: Option<Quota>,
    /// The highest priority the user may ask for; `None` is no cap.
    pub max_priority: Option<Priority>,
}

/// Limits; `None` is no limit. Running limits are enforced by the scheduler (a job waits);
/// `max_queued_jobs` by [`crate::check_submission`] (a submission is refused).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quota {
    /// Cores held by running jobs together.
    pub max_cores: Option<u32>,
    /// Memory held by running jobs together.
    pub max_memory_mib: Option<u64>,
    /// Jobs running (or starting) at once.
    pub max_running_jobs: Option<u32>,
    /// Jobs queued at once; a submission beyond it is refused.
    pub max_queued_jobs: Option<u32>,
}

impl Config {
    /// The configured queue of that name.
    pub fn queue(&self, name: &str) -> Option<&Queue> {
        self.queues.iter().find(|q| q.name == name)
    }

    /// The configured group of that name.
    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.name == name)
    }

    /// The configured user of that name.
    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name == name)
    }

    /// The group a user belongs to.
    pub fn group_of(&self, user: &str) -> &str {
        self.user(user)
            .and_then(|u| u.group.as_deref())
            .unwrap_or(DEFAULT_GROUP)
    }

    /// The queue a job of `user` goes to when it does not name one.
    pub fn default_queue_of(&self, user: &str) -> &str {
        self.group(self.group_of(user))
            .and_then(|g| g.queue.as_deref())
            .unwrap_or(DEFAULT_QUEUE)
    }

    /// True when `name` is a queue jobs may go to: listed, named by a group, or `default`.
    pub fn queue_exists(&self, name: &str) -> bool {
        name == DEFAULT_QUEUE
            || self.queue(name).is_some()
            || self.groups.iter().any(|g| g.queue.as_deref() == Some(name))
    }

    /// The groups whose members may submit to queue `name`: the groups whose own queue it is,
    /// then those it is opened to, without repeats. Says nothing of `default`, which is open
    /// to everyone (see [`Config::may_submit_to`]).
    pub fn groups_allowed_in(&self, name: &str) -> Vec<&str> {
        let mut groups: Vec<&str> = Vec::new();
        let own = self
            .groups
            .iter()
            .filter(|g| g.queue.as_deref() == Some(name))
            .map(|g| g.name.as_str());
        let opened = self
            .queue(name)
            .into_iter()
            .flat_map(|q| q.open_to.iter().map(String::as_str));
        for g in own.chain(opened) {
            if !groups.contains(&g) {
                groups.push(g);
            }
        }
        groups
    }

    /// True when a member of `group` may submit to queue `name`: the queue `default` is open
    /// to everyone; any other only to the groups whose own queue it is and those it is
    /// opened to.
    pub fn may_submit_to(&self, group: &str, name: &str) -> bool {
        name == DEFAULT_QUEUE || self.groups_allowed_in(name).contains(&group)
    }

    /// The queues a member of `group` may submit to: the group's own queue first, then the
    /// others in the order they are configured or named, `default` among them.
    pub fn queues_open_to(&self, group: &str) -> Vec<&str> {
        let own = self
            .group(group)
            .and_then(|g| g.queue.as_deref())
            .unwrap_or(DEFAULT_QUEUE);
        let mut queues = vec![own];
        let named = self
            .queues
            .iter()
            .map(|q| q.name.as_str())
            .chain(self.groups.iter().filter_map(|g| g.queue.as_deref()))
            .chain([DEFAULT_QUEUE]);
        for q in named {
            if !queues.contains(&q) && self.may_submit_to(group, q) {
                queues.push(q);
            }
        }
        queues
    }

    /// The limits that apply to `user` alone.
    pub fn user_quota(&self, user: &str) -> Quota {
        match self.user(user).and_then(|u| u.quota) {
            Some(q) => q,
            None => self
                .group(self.group_of(user))
                .map(|g| g.member_quota)
                .unwrap_or_default(),
        }
    }

    /// The highest priority `user` may use.
    pub fn max_priority(&self, user: &str) -> Priority {
        self.user(user)
            .and_then(|u| u.max_priority)
            .unwrap_or(Priority::High)
    }
}
