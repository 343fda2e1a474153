//! The `hearth` CLI's user commands (login, submit, jobs, logs, fs, users, tokens). A client
//! of the REST API and nothing else: every command is one or a few API calls.

pub mod config;
mod connect;
pub mod http;
mod nodes;
mod output;
mod policy;
mod submit;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use config::ClientConfig;
use hearth_model::api;
use http::Client;
use output::{print_job, print_jobs, Format};
use std::io::{Read, Write};
use std::path::PathBuf;

pub use submit::SubmitArgs;

/// Options every user command accepts.
#[derive(Debug, Clone, Args)]
pub struct Global {
    /// Client config file (default ~/.config/hearth/config.json)
    #[arg(long, global = true, env = "HEARTH_CONFIG")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Log in and store a token in the client config
    Login {
        #[arg(long, env = "HEARTH_SERVER")]
        server: String,
        #[arg(long)]
        user: String,
        /// Read the password from standard input (for scripts)
        #[arg(long)]
        password_stdin: bool,
    },
    /// Show who you are logged in as
    Whoami,
    /// Submit a Spark application (flags as in spark-submit)
    Submit(Box<SubmitArgs>),
    /// List your jobs (all users' with --all, admins only)
    Jobs {
        #[arg(long)]
        all: bool,
        /// Only jobs in this state
        #[arg(long)]
        state: Option<String>,
        #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// One job
    Job {
        #[command(subcommand)]
        cmd: JobCommand,
    },
    /// Cancel a job
    Cancel { id: u64 },
    /// A job's output
    Logs {
        id: u64,
        /// Stream live output until the job ends
        #[arg(short, long)]
        follow: bool,
        /// Only the last N lines
        #[arg(long)]
        tail: Option<usize>,
    },
    /// Your private workspace
    Fs {
        #[command(subcommand)]
        cmd: FsCommand,
    },
    /// Manage users (admins)
    User {
        #[command(subcommand)]
        cmd: UserCommand,
    },
    /// Manage your API tokens
    Token {
        #[command(subcommand)]
        cmd: TokenCommand,
    },
    /// Queues: use vs fair share vs limits (create/set/delete: admins)
    Queue {
        #[command(subcommand)]
        cmd: policy::QueueCommand,
    },
    /// Groups of users and the queue their jobs go to (admins)
    Group {
        #[command(subcommand)]
        cmd: policy::GroupCommand,
    },
    /// What tasks may reach over the network: denied networks, egress of queues, groups
    /// and users (changes: admins)
    Network {
        #[command(subcommand)]
        cmd: policy::NetworkCommand,
    },
    /// Quotas
    Quota {
        #[command(subcommand)]
        cmd: QuotaCommand,
    },
    /// Print the Spark Connect URL (with a new token) and the CA to trust, as shell lines
    Connect {
        /// The gateway's host name as clients reach it (default: the server's)
        #[arg(long)]
        host: Option<String>,
        /// The token's lifetime, e.g. 30d (default: until revoked)
        #[arg(long)]
        ttl: Option<String>,
        /// The engine: spark (Spark's own Connect server, everything Spark does) or sail
        /// (starts in a fraction of a second, covers less of Spark)
        #[arg(long, default_value = "spark", value_parser = ["spark", "sail"])]
        engine: String,
    },
    /// Your notebook: JupyterLab behind Hearth's login, its kernels with `spark` ready
    Notebook {
        #[command(subcommand)]
        cmd: NotebookCommand,
    },
    /// Your Spark Connect engines and notebooks (all users' with --all, admins)
    Sessions {
        #[arg(long)]
        all: bool,
        #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// One Spark Connect engine
    Session {
        #[command(subcommand)]
        cmd: SessionCommand,
    },
    /// The machines and what jobs use of them
    Nodes {
        #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Joined machines: join tokens, drain, undrain, remove (admins)
    Node {
        #[command(subcommand)]
        cmd: nodes::NodeCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum NotebookCommand {
    /// Start your notebook (or find it running) and print its URL once it is up
    Start {
        /// Return at once instead of waiting for it to be up
        #[arg(long)]
        no_wait: bool,
    },
    /// Stop your notebook (your files stay in your workspace)
    Stop,
}

#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// Stop an engine now (the next query starts a new one)
    Stop { id: u64 },
}

#[derive(Debug, Subcommand)]
pub enum QuotaCommand {
    /// Set limits for a user, a group, or each member of a group (admins)
    Set(policy::QuotaArgs),
}

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// State, phases, resources, exit code, and why it waits
    Show {
        id: u64,
        #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
}

#[derive(Debug, Subcommand)]
pub enum FsCommand {
    /// List a directory of your workspace
    Ls { path: Option<String> },
    /// Upload a local file into your workspace
    Put {
        local: PathBuf,
        remote: Option<String>,
    },
    /// Download a file from your workspace (to standard output with `-`)
    Get {
        remote: String,
        local: Option<PathBuf>,
    },
    /// Remove a file or directory from your workspace
    Rm { path: String },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user (a password is generated unless one comes on stdin)
    Add {
        name: String,
        #[arg(long)]
        admin: bool,
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users
    List {
        #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Remove a user (their workspace is kept aside)
    Remove { name: String },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token, e.g. for CI (shown once)
    Create {
        name: String,
        /// Lifetime, e.g. 30d or 12h; default: does not expire
        #[arg(long)]
        ttl: Option<String>,
        /// Spark Connect only: the token cannot drive the REST API
        #[arg(long)]
        connect_only: bool,
    },
    /// List your tokens
    List {
        #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Revoke a token
    Revoke { id: u64 },
}

fn read_password(from_stdin: bool, prompt: &str) -> Result<String> {
    let mut line = String::new();
    if from_stdin {
        std::io::stdin().read_line(&mut line)?;
    } else {
        eprint!("{prompt}");
        std::io::stderr().flush()?;
        line = read_hidden_line()?;
        eprintln!();
    }
    let pw = line.trim_end_matches(['\n', '\r']).to_string();
    if pw.is_empty() {
        bail!("the password is empty");
    }
    Ok(pw)
}

/// Reads a line from the terminal without echoing it.
fn read_hidden_line() -> Result<String> {
    // SAFETY: termios calls on stdin with a zeroed struct that tcgetattr fills.
    unsafe {
        let mut term: libc::termios = std::mem::zeroed();
        let is_tty = libc::tcgetattr(0, &mut term) == 0;
        if is_tty {
            let mut silent = term;
            silent.c_lflag &= !libc::ECHO;
            libc::tcsetattr(0, libc::TCSANOW, &silent);
        }
        let mut line = String::new();
        let res = std::io::stdin().read_line(&mut line);
        if is_tty {
            libc::tcsetattr(0, libc::TCSANOW, &term);
        }
        res?;
        Ok(line)
    }
}

/// Runs one user command; returns the process exit code.
pub fn run(global: &Global, cmd: Command) -> Result<i32> {
    let config_path = global.config.clone().unwrap_or_else(config::default_path);
    if let Command::Login {
        server,
        user,
        password_stdin,
    } = &cmd
    {
        let password = read_password(*password_stdin, &format!("Password for {user}: "))?;
        let client = Client::new(server, None);
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        let resp: api::LoginResponse = client.send(
            "POST",
            "/login",
            &api::LoginRequest {
                user: user.clone(),
                password,
                token_name: Some(format!("login from {}", host.trim())),
            },
        )?;
        config::save(
            &config_path,
            &ClientConfig {
                server: client.server.clone(),
                user: resp.user.name.clone(),
                token: resp.token,
            },
        )?;
        eprintln!(
            "Logged in to {} as {}{}. Token stored in {}.",
            client.server,
            resp.user.name,
            if resp.user.admin { " (admin)" } else { "" },
            config_path.display()
        );
        return Ok(0);
    }
    let cfg = config::load(&config_path)?;
    let client = Client::new(&cfg.server, Some(cfg.token.clone()));
    match cmd {
        Command::Login { .. } => unreachable!("handled above"),
        Command::Whoami => {
            let me: api::User = client.get("/whoami")?;
            println!(
                "{} on {}{} (uid {})",
                me.name,
                cfg.server,
                if me.admin { ", admin" } else { "" },
                me.uid
            );
        }
        Command::Submit(args) => return submit::run(&client, *args),
        Command::Jobs { all, state, output } => {
            let mut path = format!("/jobs?all={all}");
            if let Some(s) = state {
                path.push_str(&format!("&state={s}"));
            }
            let list: api::JobList = client.get(&path)?;
            print_jobs(&list.jobs, output, all)?;
        }
        Command::Job {
            cmd: JobCommand::Show { id, output },
        } => {
            let mut job: api::Job = client.get(&format!("/jobs/{id}"))?;
            // A full URL: the user opens it in a browser (logged in to the console).
            if let Some(ui) = &job.ui_url {
                job.ui_url = Some(format!("{}{ui}", client.server.trim_end_matches('/')));
            }
            print_job(&job, output)?;
        }
        Command::Cancel { id } => {
            let job: api::Job = client.post_empty(&format!("/jobs/{id}/cancel"))?;
            eprintln!("Job {} is being cancelled (state: {}).", job.id, job.state);
        }
        Command::Logs { id, follow, tail } => {
            stream_logs(&client, id, follow, tail)?;
        }
        Command::Fs { cmd } => fs(&client, cmd)?,
        Command::User { cmd } => users(&client, cmd)?,
        Command::Token { cmd } => tokens(&client, cmd)?,
        Command::Queue { cmd } => policy::queue(&client, cmd)?,
        Command::Group { cmd } => policy::group(&client, cmd)?,
        Command::Network { cmd } => policy::network(&client, cmd)?,
        Command::Quota {
            cmd: QuotaCommand::Set(args),
        } => policy::quota(&client, args)?,
        Command::Connect { host, ttl, engine } => {
            let ttl_seconds = ttl.as_deref().map(parse_ttl).transpose()?;
            connect::connect(&client, &config_path, host, ttl_seconds, &engine)?
        }
        Command::Notebook {
            cmd: NotebookCommand::Start { no_wait },
        } => connect::notebook_start(&client, !no_wait)?,
        Command::Notebook {
            cmd: NotebookCommand::Stop,
        } => connect::notebook_stop(&client)?,
        Command::Sessions { all, output } => connect::list(&client, all, output)?,
        Command::Session {
            cmd: SessionCommand::Stop { id },
        } => connect::stop(&client, id)?,
        Command::Nodes { output } => {
            let nodes: Vec<api::NodeInfo> = client.get("/nodes")?;
            output::print_nodes(&nodes, output)?;
        }
        Command::Node { cmd } => nodes::run(&client, cmd)?,
    }
    Ok(0)
}

/// Prints a job's output. With `follow`, streams until the job ends and, if the connection
/// drops, reconnects from the last byte received, so no line is lost or repeated.
pub fn stream_logs(client: &Client, id: u64, follow: bool, tail: Option<usize>) -> Result<()> {
    let mut offset: Option<u64> = None;
    let mut failures = 0;
    let stdout = std::io::stdout();
    loop {
        let mut path = format!("/jobs/{id}/logs?follow={follow}");
        match (offset, tail) {
            (Some(o), _) => path.push_str(&format!("&offset={o}")),
            (None, Some(n)) => path.push_str(&format!("&tail={n}")),
            (None, None) => {}
        }
        let resp = match client.call(client.request("GET", &path), None) {
            Ok(r) => r,
            Err(e) if follow && offset.is_some() && failures < 30 => {
                failures += 1;
                eprintln!("(log stream interrupted: {e}; reconnecting)");
                std::thread::sleep(std::time::Duration::from_secs(1));
                continue;
            }
            Err(e) => return Err(e),
        };
        let start: u64 = resp
            .header("x-hearth-log-offset")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut pos = offset.unwrap_or(start);
        let mut reader = resp.into_reader();
        let mut buf = vec![0u8; 64 * 1024];
        let ended = loop {
            match reader.read(&mut buf) {
                Ok(0) => break true,
                Ok(n) => {
                    let mut out = stdout.lock();
                    out.write_all(&buf[..n])?;
                    out.flush()?;
                    pos += n as u64;
                    failures = 0;
                }
                Err(e) => {
                    if !follow {
                        return Err(e).context("reading the log");
                    }
                    eprintln!("(log stream interrupted: {e}; reconnecting)");
                    break false;
                }
            }
        };
        offset = Some(pos);
        if ended || !follow {
            return Ok(());
        }
        failures += 1;
        if failures > 30 {
            bail!("the log stream kept failing; try `hearth logs {id} -f` again");
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

fn encode_path(p: &str) -> String {
    p.trim_start_matches('/')
        .split('/')
        .map(|seg| {
            seg.bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn fs(client: &Client, cmd: FsCommand) -> Result<()> {
    match cmd {
        FsCommand::Ls { path } => {
            let p = path.unwrap_or_default();
            let url = if p.trim_matches('/').is_empty() {
                "/files".to_string()
            } else {
                format!("/files/{}", encode_path(&p))
            };
            let resp = client.call(client.request("GET", &url), None)?;
            let is_json = resp.content_type() == "application/json";
            if !is_json {
                bail!("{p} is a file, not a directory: use `hearth fs get {p}`");
            }
            let entries: Vec<api::FileEntry> = http::read_json(resp)?;
            for e in entries {
                if e.dir {
                    println!("{:>12}  {}/", "-", e.name);
                } else {
                    println!("{:>12}  {}", e.size, e.name);
                }
            }
        }
        FsCommand::Put { local, remote } => {
            let meta = std::fs::metadata(&local)
                .with_context(|| format!("no such file: {}", local.display()))?;
            if meta.is_dir() {
                bail!(
                    "{} is a directory: put files one at a time",
                    local.display()
                );
            }
            let name = local
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .ok_or_else(|| anyhow!("{} has no file name", local.display()))?;
            let remote = match remote {
                Some(r) if r.ends_with('/') => format!("{r}{name}"),
                Some(r) => r,
                None => name,
            };
            let file = std::fs::File::open(&local)
                .with_context(|| format!("opening {}", local.display()))?;
            let reader = submit::Progress::new(file, meta.len(), &remote);
            client.put_reader(
                &format!("/files/{}", encode_path(&remote)),
                meta.len(),
                reader,
            )?;
            eprintln!("{} -> {remote} ({} bytes)", local.display(), meta.len());
        }
        FsCommand::Get { remote, local } => {
            let resp = client.call(
                client.request("GET", &format!("/files/{}", encode_path(&remote))),
                None,
            )?;
            if resp.content_type() == "application/json" {
                bail!("{remote} is a directory: use `hearth fs ls {remote}`");
            }
            let mut reader = resp.into_reader();
            match local.as_deref().map(|p| p.to_string_lossy().to_string()) {
                Some(p) if p == "-" => {
                    std::io::copy(&mut reader, &mut std::io::stdout().lock())?;
                }
                other => {
                    let dest = PathBuf::from(other.unwrap_or_else(|| {
                        remote.rsplit('/').next().unwrap_or(&remote).to_string()
                    }));
                    let mut tmp = dest.clone().into_os_string();
                    tmp.push(".hearth-part");
                    let tmp = PathBuf::from(tmp);
                    let mut f = std::fs::File::create(&tmp)
                        .with_context(|| format!("creating {}", tmp.display()))?;
                    let n = std::io::copy(&mut reader, &mut f)?;
                    std::fs::rename(&tmp, &dest)?;
                    eprintln!("{remote} -> {} ({n} bytes)", dest.display());
                }
            }
        }
        FsCommand::Rm { path } => {
            client.delete(&format!("/files/{}", encode_path(&path)))?;
            eprintln!("removed {path}");
        }
    }
    Ok(())
}

fn users(client: &Client, cmd: UserCommand) -> Result<()> {
    match cmd {
        UserCommand::Add {
            name,
            admin,
            password_stdin,
        } => {
            let password = if password_stdin {
                Some(read_password(true, "")?)
            } else {
                None
            };
            let created: api::CreatedUser = client.send(
                "POST",
                "/users",
                &api::CreateUser {
                    name,
                    admin,
                    password,
                },
            )?;
            println!(
                "Created user {} (uid {}){}.",
                created.user.name,
                created.user.uid,
                if created.user.admin { ", an admin" } else { "" }
            );
            if let Some(p) = created.generated_password {
                println!("Password (shown only this once): {p}");
            }
        }
        UserCommand::List { output } => {
            let list: Vec<api::User> = client.get("/users")?;
            output::print_users(&list, output)?;
        }
        UserCommand::Remove { name } => {
            let resp: serde_json::Value =
                http::read_json(client.delete(&format!("/users/{name}"))?)?;
            println!(
                "Removed user {name}; their workspace was kept at {}.",
                resp["workspace_kept_at"].as_str().unwrap_or("?")
            );
        }
    }
    Ok(())
}

/// Parses `30d`, `12h`, `90m`, `3600s` or a bare number of seconds.
pub(crate) fn parse_ttl(s: &str) -> Result<u64> {
    let (num, mult) = match s.chars().last() {
        Some('d') => (&s[..s.len() - 1], 86_400),
        Some('h') => (&s[..s.len() - 1], 3_600),
        Some('m') => (&s[..s.len() - 1], 60),
        Some('s') => (&s[..s.len() - 1], 1),
        _ => (s, 1),
    };
    match num.parse::<u64>().ok().and_then(|n| n.checked_mul(mult)) {
        Some(n) if n > 0 => Ok(n),
        _ => bail!("--ttl {s} is not a duration: write e.g. 30d, 12h, 90m or 3600s"),
    }
}

fn tokens(client: &Client, cmd: TokenCommand) -> Result<()> {
    match cmd {
        TokenCommand::Create {
            name,
            ttl,
            connect_only,
        } => {
            let ttl_seconds = ttl.as_deref().map(parse_ttl).transpose()?;
            let created: api::CreatedToken = client.send(
                "POST",
                "/tokens",
                &api::CreateToken {
                    name,
                    ttl_seconds,
                    scope: connect_only.then(|| "connect".into()),
                },
            )?;
            eprintln!("Created token {} (shown only this once):", created.token.id);
            println!("{}", created.secret);
        }
        TokenCommand::List { output } => {
            let list: Vec<api::Token> = client.get("/tokens")?;
            output::print_tokens(&list, output)?;
        }
        TokenCommand::Revoke { id } => {
            client.delete(&format!("/tokens/{id}"))?;
            eprintln!("Revoked token {id}.");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_read_like_durations() {
        assert_eq!(parse_ttl("30d").ok(), Some(30 * 86_400));
        assert_eq!(parse_ttl("90m").ok(), Some(5_400));
        assert_eq!(parse_ttl("15").ok(), Some(15));
        assert!(parse_ttl("0").is_err());
        assert!(parse_ttl("soon").is_err());
    }

    #[test]
    fn workspace_paths_are_url_encoded() {
        assert_eq!(encode_path("/out/part 1.csv"), "out/part%201.csv");
    }
}
