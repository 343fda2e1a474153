//! The HTTP client of the REST API: the CLI's only way to reach the server.

use anyhow::{anyhow, bail, Result};
use hearth_model::api::ErrorBody;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::io::Read;
use std::time::Duration;

pub struct Client {
    pub server: String,
    token: Option<String>,
    agent: ureq::Agent,
}

/// An error the server answered with: its HTTP status, stable code and message.
#[derive(Debug)]
pub struct ApiFailure {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.message)?;
        if self.status == 401 {
            write!(f, " (log in with `hearth login`)")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiFailure {}

impl Client {
    pub fn new(server: &str, token: Option<String>) -> Client {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .build();
        Client {
            server: server.trim_end_matches('/').to_string(),
            token,
            agent,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.server)
    }

    pub fn request(&self, method: &str, path: &str) -> ureq::Request {
        let req = self.agent.request(method, &self.url(path));
        match &self.token {
            Some(t) => req.set("Authorization", &format!("Bearer {t}")),
            None => req,
        }
    }

    /// Sends and turns every failure into a message a person can act on.
    pub fn call(
        &self,
        req: ureq::Request,
        body: Option<&serde_json::Value>,
    ) -> Result<ureq::Response> {
        let result = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        self.check(result)
    }

    pub fn check(&self, result: Result<ureq::Response, ureq::Error>) -> Result<ureq::Response> {
        match result {
            Ok(r) => Ok(r),
            Err(ureq::Error::Status(status, resp)) => {
                let text = resp.into_string().unwrap_or_default();
                match serde_json::from_str::<ErrorBody>(&text) {
                    Ok(e) => Err(ApiFailure {
                        status,
                        code: e.error.code,
                        message: e.error.message,
                    }
                    .into()),
                    Err(_) => bail!("the server answered {status}: {}", text.trim()),
                }
            }
            Err(ureq::Error::Transport(t)) => Err(anyhow!(
                "cannot reach the Hearth server at {}: {t}. Is it running (hearth up)?",
                self.server
            )),
        }
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let resp = self.call(self.request("GET", path), None)?;
        read_json(resp)
    }

    pub fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: &B,
    ) -> Result<T> {
        let value = serde_json::to_value(body)?;
        let resp = self.call(self.request(method, path), Some(&value))?;
        read_json(resp)
    }

    pub fn post_empty<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let resp = self.check(self.request("POST", path).send_bytes(&[]))?;
        read_json(resp)
    }

    pub fn delete(&self, path: &str) -> Result<ureq::Response> {
        self.call(self.request("DELETE", path), None)
    }

    pub fn put_reader(&self, path: &str, len: u64, reader: impl Read) -> Result<ureq::Response> {
        let req = self
            .request("PUT", path)
            .set("Content-Type", "application/octet-stream")
            .set("Content-Length", &len.to_string());
        self.check(req.send(reader))
    }
}

pub fn read_json<T: DeserializeOwned>(resp: ureq::Response) -> Result<T> {
    let text = resp.into_string()?;
    serde_json::from_str(&text).map_err(|e| anyhow!("the server's answer was not understood: {e}"))
}
