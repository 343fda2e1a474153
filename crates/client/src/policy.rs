//! Admin commands on the scheduling policy (`hearth queue|group|quota ...`): each reads the
//! policy document, changes one thing, and writes it back with the version it read, so a
//! concurrent change by another admin is refused rather than overwritten.

use crate::http::Client;
use crate::output::{print_queues, Format};
use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use hearth_model::api::{GroupSpec, QueueSpec, QueueStatus, Quota, ResourceLimit, SchedPolicy};
use hearth_model::net::{Cidr, Egress};
use hearth_model::parse_mib;

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Every queue: use, fair share and limits
    List {
        #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// One queue, per user: use vs fair share vs quota
    Show {
        name: String,
        #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Create a queue (admins)
    Create {
        name: String,
        #[command(flatten)]
        settings: QueueSettings,
    },
    /// Change a queue (admins)
    Set {
        name: String,
        #[command(flatten)]
        settings: QueueSettings,
    },
    /// Delete a queue (admins)
    Delete { name: String },
}

#[derive(Debug, Args, Default)]
pub struct QueueSettings {
    /// Share of the machines relative to other queues
    #[arg(long)]
    weight: Option<u32>,
    /// Cores the queue always gets when it asks (preempting preemptible work)
    #[arg(long)]
    guaranteed_cores: Option<u32>,
    /// Memory the queue always gets when it asks, e.g. 16g
    #[arg(long)]
    guaranteed_memory: Option<String>,
    /// Most cores the queue's jobs may hold together
    #[arg(long)]
    max_cores: Option<u32>,
    /// Most memory the queue's jobs may hold together, e.g. 64g
    #[arg(long)]
    max_memory: Option<String>,
    /// Every job of the queue is preemptible (`--best-effort`, or `--best-effort false`)
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    best_effort: Option<bool>,
    /// Groups that may submit here besides those whose own queue it is, e.g. lab,ml
    /// (replaces the list; `--open-to ''` closes the queue to all but its own groups)
    #[arg(long, value_delimiter = ',', value_name = "GROUPS")]
    open_to: Option<Vec<String>>,
    /// Where its jobs may connect beyond their own networks: open, none, or networks such
    /// as 10.1.0.0/16,203.0.113.7
    #[arg(long, value_parser = Egress::parse)]
    egress: Option<Egress>,
}

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// List groups
    List,
    /// Create a group whose members' jobs go to QUEUE (admins)
    Create {
        name: String,
        #[arg(long)]
        queue: Option<String>,
    },
    /// Put users in a group (admins)
    Add { name: String, users: Vec<String> },
    /// Delete a group; its members return to `default` (admins)
    Delete { name: String },
}

#[derive(Debug, Args)]
pub struct QuotaArgs {
    /// A user's own quota
    #[arg(long, conflicts_with_all = ["group", "members_of"])]
    user: Option<String>,
    /// A group's quota, over all its members together
    #[arg(long, conflicts_with = "members_of")]
    group: Option<String>,
    /// The quota of each member of a group
    #[arg(long)]
    members_of: Option<String>,
    #[arg(long)]
    max_cores: Option<u32>,
    /// e.g. 32g
    #[arg(long)]
    max_memory: Option<String>,
    #[arg(long)]
    max_running: Option<u32>,
    /// Submissions beyond it are refused
    #[arg(long)]
    max_queued: Option<u32>,
    /// The highest --priority the user may use (with --user)
    #[arg(long, requires = "user")]
    max_priority: Option<String>,
}

fn check_mem(flag: &str, v: &Option<String>) -> Result<()> {
    if let Some(v) = v {
        parse_mib(v).map_err(|e| anyhow::anyhow!("{flag}: {e}"))?;
    }
    Ok(())
}

fn apply(q: &mut QueueSpec, s: &QueueSettings) -> Result<()> {
    check_mem("--guaranteed-memory", &s.guaranteed_memory)?;
    check_mem("--max-memory", &s.max_memory)?;
    if let Some(w) = s.weight {
        q.weight = w;
    }
    if s.guaranteed_cores.is_some() {
        q.guaranteed.cores = s.guaranteed_cores;
    }
    if s.guaranteed_memory.is_some() {
        q.guaranteed.memory = s.guaranteed_memory.clone();
    }
    if s.max_cores.is_some() {
        q.max.cores = s.max_cores;
    }
    if s.max_memory.is_some() {
        q.max.memory = s.max_memory.clone();
    }
    if let Some(b) = s.best_effort {
        q.best_effort = b;
    }
    if let Some(egress) = &s.egress {
        q.egress = Some(egress.clone()).filter(|e| *e != Egress::Open);
    }
    if let Some(groups) = &s.open_to {
        q.open_to = groups
            .iter()
            .map(|g| g.trim())
            .filter(|g| !g.is_empty())
            .map(str::to_string)
            .collect();
    }
    Ok(())
}

/// Reads the policy, lets `change` edit it, writes it back.
fn update(client: &Client, change: impl FnOnce(&mut SchedPolicy) -> Result<String>) -> Result<()> {
    let mut policy: SchedPolicy = client.get("/policy")?;
    let done = change(&mut policy)?;
    let _: SchedPolicy = client.send("PUT", "/policy", &policy)?;
    eprintln!("{done}");
    Ok(())
}

pub fn queue(client: &Client, cmd: QueueCommand) -> Result<()> {
    match cmd {
        QueueCommand::List { output } => {
            let queues: Vec<QueueStatus> = client.get("/queues")?;
            print_queues(&queues, None, output)
        }
        QueueCommand::Show { name, output } => {
            let queues: Vec<QueueStatus> = client.get("/queues")?;
            if !queues.iter().any(|q| q.spec.name == name) {
                bail!("no queue named {name}: `hearth queue list` shows them");
            }
            print_queues(&queues, Some(&name), output)
        }
        QueueCommand::Create { name, settings } => update(client, |p| {
            if p.queues.iter().any(|q| q.name == name) {
                bail!("queue {name} already exists: change it with `hearth queue set`");
            }
            let mut q = QueueSpec {
                name: name.clone(),
                weight: 1,
                guaranteed: ResourceLimit::default(),
                max: ResourceLimit::default(),
                best_effort: false,
                open_to: Vec::new(),
                egress: None,
            };
            apply(&mut q, &settings)?;
            p.queues.push(q);
            Ok(format!("Created queue {name}."))
        }),
        QueueCommand::Set { name, settings } => update(client, |p| {
            let Some(q) = p.queues.iter_mut().find(|q| q.name == name) else {
                bail!("no queue named {name}: create it with `hearth queue create {name}`");
            };
            apply(q, &settings)?;
            Ok(format!("Changed queue {name}."))
        }),
        QueueCommand::Delete { name } => update(client, |p| {
            let before = p.queues.len();
            p.queues.retain(|q| q.name != name);
            if p.queues.len() == before {
                bail!("no queue named {name}");
            }
            if let Some(g) = p.groups.iter().find(|g| g.queue.as_deref() == Some(&name)) {
                bail!(
                    "group {} sends its jobs to {name}: point it elsewhere first",
                    g.name
                );
            }
            Ok(format!("Deleted queue {name}."))
        }),
    }
}

pub fn group(client: &Client, cmd: GroupCommand) -> Result<()> {
    match cmd {
        GroupCommand::List => {
            let p: SchedPolicy = client.get("/policy")?;
            println!("{:<16} {:<16} MEMBERS", "GROUP", "QUEUE");
            for g in &p.groups {
                let members: Vec<&str> = p
                    .users
                    .iter()
                    .filter(|(_, u)| u.group.as_deref() == Some(&g.name))
                    .map(|(n, _)| n.as_str())
                    .collect();
                println!(
                    "{:<16} {:<16} {}",
                    g.name,
                    g.queue.as_deref().unwrap_or("default"),
                    members.join(", ")
                );
            }
            Ok(())
        }
        GroupCommand::Create { name, queue } => update(client, |p| {
            if p.groups.iter().any(|g| g.name == name) {
                bail!("group {name} already exists");
            }
            p.groups.push(GroupSpec {
                name: name.clone(),
                queue,
                quota: Quota::default(),
                member_quota: Quota::default(),
                egress: None,
            });
            Ok(format!("Created group {name}."))
        }),
        GroupCommand::Add { name, users } => update(client, |p| {
            if users.is_empty() {
                bail!("name the users to add: hearth group add {name} USER...");
            }
            for u in &users {
                p.users.entry(u.clone()).or_default().group = Some(name.clone());
            }
            Ok(format!("Added {} to group {name}.", users.join(", ")))
        }),
        GroupCommand::Delete { name } => update(client, |p| {
            let before = p.groups.len();
            p.groups.retain(|g| g.name != name);
            if p.groups.len() == before {
                bail!("no group named {name}");
            }
            for u in p.users.values_mut() {
                if u.group.as_deref() == Some(&name) {
                    u.group = None;
                }
            }
            for q in &mut p.queues {
                q.open_to.retain(|g| g != &name);
            }
            Ok(format!(
                "Deleted group {name}; its members are back in `default`."
            ))
        }),
    }
}

pub fn quota(client: &Client, a: QuotaArgs) -> Result<()> {
    check_mem("--max-memory", &a.max_memory)?;
    let set = |q: &mut Quota| {
        if a.max_cores.is_some() {
            q.max_cores = a.max_cores;
        }
        if a.max_memory.is_some() {
            q.max_memory = a.max_memory.clone();
        }
        if a.max_running.is_some() {
            q.max_running_jobs = a.max_running;
        }
        if a.max_queued.is_some() {
            q.max_queued_jobs = a.max_queued;
        }
    };
    update(client, |p| {
        if let Some(user) = &a.user {
            let u = p.users.entry(user.clone()).or_default();
            set(u.quota.get_or_insert_with(Quota::default));
            if a.max_priority.is_some() {
                u.max_priority = a.max_priority.clone();
            }
            return Ok(format!("Set the quota of user {user}."));
        }
        let (name, members) = match (&a.group, &a.members_of) {
            (Some(g), _) => (g, false),
            (None, Some(g)) => (g, true),
            (None, None) => {
                bail!("say whose quota: --user NAME, --group NAME or --members-of NAME")
            }
        };
        let Some(g) = p.groups.iter_mut().find(|g| &g.name == name) else {
            bail!("no group named {name}: create it with `hearth group create {name}`");
        };
        set(if members {
            &mut g.member_quota
        } else {
            &mut g.quota
        });
        Ok(format!(
            "Set the quota of {}group {name}.",
            if members { "each member of " } else { "" }
        ))
    })
}

#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// The networks no task may reach, and where each queue's, group's and user's tasks
    /// may connect
    Show,
    /// Set the networks no task may reach, e.g. 10.0.0.0/8 192.168.0.0/16 (replaces the
    /// list; none clears it) (admins)
    Deny {
        #[arg(value_parser = Cidr::from_str_arg)]
        networks: Vec<Cidr>,
    },
    /// Where a queue's, a group's or a user's tasks may connect beyond their own networks:
    /// open, none, or networks such as 10.1.0.0/16,203.0.113.7. A task gets what its queue,
    /// its group and its user all allow (admins)
    Egress {
        #[arg(value_parser = Egress::parse)]
        egress: Egress,
        #[arg(long, conflicts_with_all = ["group", "user"], required_unless_present_any = ["group", "user"])]
        queue: Option<String>,
        #[arg(long, conflicts_with = "user")]
        group: Option<String>,
        #[arg(long)]
        user: Option<String>,
    },
}

pub fn network(client: &Client, cmd: NetworkCommand) -> Result<()> {
    match cmd {
        NetworkCommand::Show => {
            let p: SchedPolicy = client.get("/policy")?;
            let deny: Vec<String> = p.deny_networks.iter().map(Cidr::to_string).collect();
            println!(
                "Never reachable: this machine, other tasks, link-local (169.254.0.0/16), {}",
                if deny.is_empty() {
                    "and no network the admin listed".to_string()
                } else {
                    deny.join(", ")
                }
            );
            println!("{:<8} {:<24} EGRESS", "OF", "NAME");
            let show = |of: &str, name: &str, e: &Option<Egress>| {
                let e = e.as_ref().map_or("open".to_string(), Egress::to_string);
                println!("{of:<8} {name:<24} {e}");
            };
            for q in &p.queues {
                show("queue", &q.name, &q.egress);
            }
            for g in &p.groups {
                show("group", &g.name, &g.egress);
            }
            for (name, u) in p.users.iter().filter(|(_, u)| u.egress.is_some()) {
                show("user", name, &u.egress);
            }
            Ok(())
        }
        NetworkCommand::Deny { networks } => update(client, |p| {
            p.deny_networks = networks;
            Ok(if p.deny_networks.is_empty() {
                "No network is denied beyond those no task ever reaches.".to_string()
            } else {
                format!(
                    "No task may reach {} (running tasks keep the rules they started with).",
                    p.deny_networks
                        .iter()
                        .map(Cidr::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
        }),
        NetworkCommand::Egress {
            egress,
            queue,
            group,
            user,
        } => update(client, |p| {
            let value = Some(egress.clone()).filter(|e| *e != Egress::Open);
            let whose = if let Some(name) = queue {
                let Some(q) = p.queues.iter_mut().find(|q| q.name == name) else {
                    bail!("no queue named {name}: `hearth queue list` shows them");
                };
                q.egress = value;
                format!("queue {name}")
            } else if let Some(name) = group {
                let Some(g) = p.groups.iter_mut().find(|g| g.name == name) else {
                    bail!("no group named {name}: `hearth group list` shows them");
                };
                g.egress = value;
                format!("group {name}")
            } else if let Some(name) = user {
                p.users.entry(name.clone()).or_default().egress = value;
                format!("user {name}")
            } else {
                bail!("say whose: --queue, --group or --user");
            };
            Ok(format!(
                "The tasks of {whose} may now connect to: {egress} (tasks started from now on)."
            ))
        }),
    }
}
