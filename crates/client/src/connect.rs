//! Spark Connect from the CLI: `hearth connect` (the URL and CA to use with stock PySpark),
//! `hearth sessions` and `hearth session stop`.

use crate::http::Client;
use crate::output::Format;
use anyhow::{Context, Result};
use hearth_model::api;
use serde_json::Value;
use std::path::Path;

/// The host part of the server's URL: where the gateway is reached too, by default.
fn server_host(server: &str) -> String {
    let rest = server.split_once("://").map_or(server, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    if let Some(v6) = authority.strip_prefix('[') {
        return format!("[{}]", v6.split(']').next().unwrap_or(v6));
    }
    authority.split(':').next().unwrap_or(authority).to_string()
}

/// Creates a token for Spark Connect, saves the gateway's CA beside the client config, and
/// prints shell lines that PySpark understands (`SPARK_REMOTE` is its default remote).
pub fn connect(
    client: &Client,
    config_path: &Path,
    host: Option<String>,
    ttl_seconds: Option<u64>,
    engine: &str,
) -> Result<()> {
    let info: Value = client.get("/connect")?;
    let port = info["port"]
        .as_u64()
        .context("the server sent no gateway port")?;
    let host = host.unwrap_or_else(|| server_host(&client.server));
    let created: api::CreatedToken = client.send(
        "POST",
        "/tokens",
        &api::CreateToken {
            name: "spark connect".into(),
            ttl_seconds,
            // What `hearth connect` prints ends up in notebooks and scripts: it opens
            // Spark Connect and nothing else.
            scope: Some("connect".into()),
        },
    )?;
    // Any `;key=value` of the URL reaches the gateway as gRPC metadata.
    let engine = match engine {
        "spark" => String::new(),
        other => format!(";x-hearth-engine={other}"),
    };
    let url = connect_url(&host, port, &created.secret, &engine);
    if let Some(pem) = info["ca_pem"].as_str() {
        let ca = config_path.with_file_name("hearth-ca.pem");
        if let Some(dir) = ca.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(&ca, pem).with_context(|| format!("writing {}", ca.display()))?;
        println!("export GRPC_DEFAULT_SSL_ROOTS_FILE_PATH={}", ca.display());
    }
    println!("export SPARK_REMOTE='{url}'");
    eprintln!(
        "Created token {} for Spark Connect. Run `eval \"$(hearth connect)\"` in a shell, or in Python:\n  \
         SparkSession.builder.remote(\"{url}\").getOrCreate()\n\
         with GRPC_DEFAULT_SSL_ROOTS_FILE_PATH set as above so the client trusts Hearth's CA.\n\
         Spark's usual `;token=TOKEN` works too, a little slower per call in PySpark.",
        created.token.id
    );
    Ok(())
}

/// The URL for stock Spark Connect clients. The token goes as plain metadata
/// (`;x-hearth-token=`) rather than Spark's `;token=`, which PySpark turns into per-call
/// credentials run by a Python callback (about 1.6 ms per `collect()`; and with that form
/// Hearth swaps the token for the JVM engine's secret call by call instead of relaying the
/// connection). Plain metadata is not encrypted by itself: `use_ssl=true` everywhere but on
/// `localhost`, where PySpark speaks plaintext and the gateway takes it from loopback only.
pub fn connect_url(host: &str, port: u64, token: &str, extra: &str) -> String {
    let tls = if host == "localhost" {
        ""
    } else {
        ";use_ssl=true"
    };
    format!("sc://{host}:{port}/{tls};x-hearth-token={token}{extra}")
}

fn duration(ms: i64) -> String {
    let s = (ms / 1000).max(0);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{}h{}m", s / 3600, (s % 3600) / 60),
    }
}

pub fn list(client: &Client, all: bool, format: Format) -> Result<()> {
    let v: Value = client.get(&format!("/sessions?all={all}"))?;
    let sessions = v["sessions"].as_array().cloned().unwrap_or_default();
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&sessions)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = sessions
        .iter()
        .map(|s| {
            let text = |k: &str| s[k].as_str().unwrap_or("").to_string();
            let num = |k: &str| s[k].as_i64().unwrap_or(0);
            vec![
                num("id").to_string(),
                text("user"),
                text("kind"),
                text("state"),
                duration(num("uptime_ms")),
                if num("active_requests") > 0 {
                    "in use".into()
                } else {
                    duration(num("idle_ms"))
                },
                num("cores").to_string(),
                hearth_model::format_mib(num("memory_limit_mib").max(0) as u64),
                // The notebook's page, or the engine's Spark UI.
                s["url"]
                    .as_str()
                    .or(s["ui_url"].as_str())
                    .map(|p| format!("{}{p}", client.server.trim_end_matches('/')))
                    .unwrap_or_default(),
            ]
        })
        .collect();
    crate::output::table(
        &[
            "ID", "USER", "KIND", "STATE", "UPTIME", "IDLE", "CORES", "MEMORY", "URL",
        ],
        rows,
    );
    Ok(())
}

/// The caller's notebook among their sessions.
fn my_notebook(client: &Client) -> Result<Option<Value>> {
    let v: Value = client.get("/sessions")?;
    Ok(v["sessions"]
        .as_array()
        .and_then(|all| all.iter().find(|s| s["kind"] == "notebook").cloned()))
}

pub fn notebook_start(client: &Client, wait: bool) -> Result<()> {
    let started: Value = client.post_empty("/notebooks")?;
    let url = format!(
        "{}{}",
        client.server.trim_end_matches('/'),
        started["url"].as_str().unwrap_or("/")
    );
    if wait && started["state"] != "running" {
        eprintln!("Starting your notebook...");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
        loop {
            std::thread::sleep(std::time::Duration::from_millis(500));
            match my_notebook(client)? {
                Some(n) if n["state"] == "running" => break,
                Some(_) => {}
                None => anyhow::bail!(
                    "your notebook stopped while starting: `hearth sessions` and the server log say why"
                ),
            }
            if std::time::Instant::now() > deadline {
                anyhow::bail!(
                    "your notebook is still starting after 5 minutes: see `hearth sessions`"
                );
            }
        }
    }
    println!("{url}");
    eprintln!("Open it in a browser logged in to Hearth; `spark` in its kernels is your own Spark Connect session.");
    Ok(())
}

pub fn notebook_stop(client: &Client) -> Result<()> {
    match my_notebook(client)? {
        Some(n) => stop(client, n["id"].as_u64().unwrap_or(0)),
        None => {
            eprintln!("You have no notebook running.");
            Ok(())
        }
    }
}

pub fn stop(client: &Client, id: u64) -> Result<()> {
    client.delete(&format!("/sessions/{id}"))?;
    eprintln!("Stopped session {id}.");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateway_host_comes_from_the_server_url() {
        assert_eq!(server_host("http://127.0.0.1:8080"), "127.0.0.1");
        assert_eq!(
            server_host("https://spark.example.org/"),
            "spark.example.org"
        );
        assert_eq!(server_host("http://[::1]:8080"), "[::1]");
    }

    #[test]
    fn the_url_asks_for_tls_everywhere_but_localhost() {
        assert_eq!(
            connect_url("hearth.example", 15002, "hth_1_x", ""),
            "sc://hearth.example:15002/;use_ssl=true;x-hearth-token=hth_1_x"
        );
        assert_eq!(
            connect_url("localhost", 15002, "hth_1_x", ";x-hearth-engine=sail"),
            "sc://localhost:15002/;x-hearth-token=hth_1_x;x-hearth-engine=sail"
        );
    }
}
