//! The check at submission time: limits that refuse a job outright rather than make it
//! wait (queued-job quotas, the priority cap, unknown queues, queues not open to the user's
//! group). The server calls
//! [`check_submission`] before it stores a new job and shows the refusal as the error.

use std::collections::HashMap;
use std::fmt;

use crate::plan::Scope;
use crate::priority::Priority;
use crate::snapshot::{JobOptions, Snapshot};

/// Why a submission is refused, in words that say what to do instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The user's or group's `max_queued_jobs` is reached.
    TooManyQueued {
        /// Whose quota.
        scope: Scope,
        /// Jobs queued now.
        queued: u32,
        /// What the quota allows.
        max: u32,
    },
    /// The job asks for a priority above the user's cap.
    PriorityAboveCap {
        /// The priority asked for.
        asked: Priority,
        /// The highest the user may use.
        max: Priority,
    },
    /// The job names a queue that is not configured.
    UnknownQueue {
        /// The name it gave.
        queue: String,
    },
    /// The job names a queue that is not open to the user's group.
    NotAllowed {
        /// The queue it named.
        queue: String,
        /// The user's group.
        group: String,
        /// The groups the queue is open to.
        open_to: Vec<String>,
        /// The queues the user may use instead, their group's own first.
        allowed: Vec<String>,
    },
}

/// Who submits: their login name, and whether they are an admin (admins may submit to any
/// queue). A plain name converts to a user who is not an admin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Submitter<'a> {
    /// The login name.
    pub name: &'a str,
    /// Admins may submit to every queue that exists.
    pub admin: bool,
}

impl<'a> From<&'a str> for Submitter<'a> {
    fn from(name: &'a str) -> Submitter<'a> {
        Submitter { name, admin: false }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::TooManyQueued { scope, queued, max } => {
                let (who, whose) = match scope {
                    Scope::User => ("you already have".to_string(), "your"),
                    Scope::Group(g) => (format!("group {g} already has"), "its"),
                    Scope::Queue(q) => (format!("queue {q} already has"), "its"),
                };
                write!(
                    f,
                    "{who} {queued} jobs queued and {whose} quota allows {max}: wait for some to start, or cancel some"
                )
            }
            Refusal::PriorityAboveCap { asked, max } => write!(
                f,
                "priority {asked} is above the highest you may use, {max}: submit with --priority {max} or lower"
            ),
            Refusal::UnknownQueue { queue } => write!(
                f,
                "queue {queue} does not exist: ask an admin to create it, or submit without --queue"
            ),
            Refusal::NotAllowed {
                queue,
                group,
                open_to,
                allowed,
            } => {
                let open_to = match open_to.as_slice() {
                    [] => "no group yet".to_string(),
                    [one] => format!("group {one}"),
                    many => format!("groups {}", many.join(", ")),
                };
                write!(
                    f,
                    "you may not submit to queue {queue}: it is open to {open_to} (yours: {group}); you may use: {}",
                    allowed.join(", ")
                )
            }
        }
    }
}

impl std::error::Error for Refusal {}

/// May `user` submit a job with `options` now? `snapshot` is the current state (its
/// `queued` jobs are counted against the queued-job quotas; the new job is not in it).
///
/// A queue is open to the groups whose own queue it is and to the groups it is opened to
/// ([`crate::Queue::open_to`]); `default` is open to everyone, and admins may use any queue.
pub fn check_submission<'a>(
    snapshot: &Snapshot,
    user: impl Into<Submitter<'a>>,
    options: &JobOptions,
) -> Result<(), Refusal> {
    let Submitter { name: user, admin } = user.into();
    let config = &snapshot.config;
    if let Some(queue) = &options.queue {
        if !config.queue_exists(queue) {
            return Err(Refusal::UnknownQueue {
                queue: queue.clone(),
            });
        }
        let group = config.group_of(user);
        if !admin && !config.may_submit_to(group, queue) {
            let names = |v: Vec<&str>| v.into_iter().map(str::to_string).collect();
            return Err(Refusal::NotAllowed {
                queue: queue.clone(),
                group: group.to_string(),
                open_to: names(config.groups_allowed_in(queue)),
                allowed: names(config.queues_open_to(group)),
            });
        }
    }
    let max = config.max_priority(user);
    if options.priority > max {
        return Err(Refusal::PriorityAboveCap {
            asked: options.priority,
            max,
        });
    }
    let group = config.group_of(user);
    let mut group_of: HashMap<&str, bool> = HashMap::new();
    let (mut mine, mut ours) = (0u32, 0u32);
    for job in &snapshot.queued {
        if job.user == user {
            mine += 1;
        }
        let same_group = *group_of
            .entry(job.user.as_str())
            .or_insert_with(|| config.group_of(&job.user) == group);
        if same_group {
            ours += 1;
        }
    }
    if let Some(max) = config.user_quota(user).max_queued_jobs {
        if mine >= max {
            return Err(Refusal::TooManyQueued {
                scope: Scope::User,
                queued: mine,
                max,
            });
        }
    }
    if let Some(max) = config.group(group).and_then(|g| g.quota.max_queued_jobs) {
        if ours >= max {
            return Err(Refusal::TooManyQueued {
                scope: Scope::Group(group.to_string()),
                queued: ours,
                max,
            });
        }
    }
    Ok(())
}
