//! The OpenAPI 3.1 document of the API, served at `/api/v1/openapi.json`. Tests check that
//! it lists exactly the routes in [`super::ROUTES`].

use super::Caller;
use axum::Json;
use serde_json::{json, Value};

fn op(summary: &str, body: Option<&str>, ok: &str) -> Value {
    let mut op = json!({
        "summary": summary,
        "responses": {
            ok: {"description": "success"},
            "4XX": {"description": "the request was wrong; the body says what to fix",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
        }
    });
    if let Some(schema) = body {
        op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}});
    }
    op
}

fn raw_body(summary: &str, ok: &str) -> Value {
    let mut o = op(summary, None, ok);
    o["requestBody"] = json!({"required": true, "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}});
    o
}

pub fn document() -> Value {
    let file_ref = json!({"type": "object", "required": ["name", "sha256"], "additionalProperties": false,
        "properties": {"name": {"type": "string"}, "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"}}});
    let files = json!({"type": "array", "items": {"$ref": "#/components/schemas/FileRef"}});
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Hearth API", "version": "1"},
        "security": [{"bearer": []}, {"session": []}],
        "paths": {
            "/api/v1/login": {"post": {"security": [], "summary": "exchange a user name and password for a token",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/LoginRequest"}}}},
                "responses": {"200": {"description": "a new token"}, "401": {"description": "wrong user name or password"}, "429": {"description": "too many failed logins for this name or from this address, or too many waiting: try again after Retry-After seconds"}}}},
            "/api/v1/whoami": {"get": op("the calling user", None, "200")},
            "/api/v1/session": {
                "post": {"security": [], "summary": "log in a browser: sets an HttpOnly session cookie (a token that expires in 7 days) and returns the CSRF value that cookie-authenticated changes must send in x-hearth-csrf",
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SessionRequest"}}}},
                    "responses": {"201": {"description": "logged in: {user, csrf}"}, "401": {"description": "wrong user name or password"}, "429": {"description": "too many failed logins for this name or from this address, or too many waiting: try again after Retry-After seconds"}}},
                "delete": op("log out: revokes the session cookie's token and clears the cookies", None, "204")},
            "/api/v1/events": {"get": {"summary": "server-sent events (text/event-stream; send Accept: text/event-stream): a `jobs` event with the jobs whose state changed, and a `sessions` event with the caller's sessions (admins: everyone's; id, user, kind, state, in_use, last_used_s) when one started, changed state, stopped or was used, checked about once a second",
                "parameters": [{"name": "all", "in": "query", "schema": {"type": "boolean"}, "description": "everyone's jobs (admins)"}],
                "responses": {"200": {"description": "an event stream"}, "406": {"description": "the client did not accept text/event-stream"}}}},
            "/api/v1/users": {"get": op("all users (admins)", None, "200"),
                              "post": op("create a user (admins)", Some("CreateUser"), "201")},
            "/api/v1/users/{name}": {"delete": op("remove a user (admins)", None, "200"),
                "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}]},
            "/api/v1/tokens": {"get": op("your tokens (another user's with user=NAME, admins)", None, "200"),
                               "post": op("create a token (for another user with user=NAME, admins)", Some("CreateToken"), "201"),
                               "parameters": [{"name": "user", "in": "query", "schema": {"type": "string"}}]},
            "/api/v1/tokens/{id}": {"delete": op("revoke one of your tokens (admins: anyone's)", None, "204"),
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "integer"}}]},
            "/api/v1/blobs/{sha256}": {
                "put": raw_body("upload a file; its SHA-256 must match the path", "201"),
                "get": op("whether you uploaded this content", None, "200"),
                "parameters": [{"name": "sha256", "in": "path", "required": true, "schema": {"type": "string"}}]},
            "/api/v1/jobs": {
                "get": {"summary": "your jobs, newest first (all users' with all=true, admins)",
                        "parameters": [
                            {"name": "all", "in": "query", "schema": {"type": "boolean"}},
                            {"name": "state", "in": "query", "schema": {"$ref": "#/components/schemas/JobState"}},
                            {"name": "limit", "in": "query", "schema": {"type": "integer"}},
                            {"name": "before", "in": "query", "schema": {"type": "integer"}, "description": "the next page: jobs older than this id"}],
                        "responses": {"200": {"description": "jobs"}}},
                "post": op("submit a job", Some("SubmitJob"), "201")},
            "/api/v1/jobs/{id}": {"get": op("one job", None, "200"),
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "integer"}}]},
            "/api/v1/jobs/{id}/cancel": {"post": op("cancel a job", None, "200"),
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "integer"}}]},
            "/api/v1/jobs/{id}/logs": {"get": {"summary": "a job's output; header x-hearth-log-offset gives the body's starting byte offset",
                "parameters": [
                    {"name": "id", "in": "path", "required": true, "schema": {"type": "integer"}},
                    {"name": "offset", "in": "query", "schema": {"type": "integer"}},
                    {"name": "tail", "in": "query", "schema": {"type": "integer"}},
                    {"name": "follow", "in": "query", "schema": {"type": "boolean"}}],
                "responses": {"200": {"description": "text/plain output"}}}},
            "/api/v1/files": {"get": op("list your workspace", None, "200")},
            "/api/v1/files/{path}": {
                "get": op("a file's content, or a directory's listing", None, "200"),
                "put": raw_body("write a file", "201"),
                "delete": op("remove a file or directory", None, "204"),
                "parameters": [{"name": "path", "in": "path", "required": true, "schema": {"type": "string"}}]},
            "/api/v1/nodes": {"get": op("the machines and their use: the local node and joined nodes (state ready/draining/down, labels, last heartbeat, runtime (a joined node: only while connected with one), used_cores and used_memory_mib held by its running jobs and live engines, running_jobs, measured: its machine's use measured there every few seconds, all processes counted {cpus, busy_cores (null until two readings), memory_mib, used_memory_mib}, null when unknown (down, or an agent too old))", None, "200")},
            "/api/v1/nodes/{name}": {"delete": op("remove a joined node: its certificate is revoked and its connection cut (admins)", None, "204"),
                "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}]},
            "/api/v1/nodes/{name}/drain": {"post": op("place no new work on a joined node (admins)", None, "204"),
                "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}]},
            "/api/v1/nodes/{name}/undrain": {"post": op("let a drained node take work again (admins)", None, "204"),
                "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}]},
            "/api/v1/nodes/{name}/approve": {"post": op("accept the offer the admin saw (cores, memory_mib), as it is: a held node takes work again; 409 if it offers something else now (admins)", Some("ApproveNode"), "204"),
                "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}]},
            "/api/v1/node-tokens": {"get": op("join tokens, without their secrets (admins)", None, "200"),
                "post": op("create a join token; the answer holds the exact `hearth agent` command, shown once (admins)", Some("CreateNodeToken"), "201")},
            "/api/v1/node-tokens/{id}": {"delete": op("revoke a join token (admins)", None, "204"),
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "integer"}}]},
            "/api/v1/usage": {"get": {"summary": "the machine's use over the last day, sampled every --usage-interval: {interval_seconds, samples: [{at_ms, cores, used_cores, memory_mib, used_memory_mib, running_jobs, queued_jobs}]}, oldest first",
                "parameters": [{"name": "seconds", "in": "query", "schema": {"type": "integer"}, "description": "only the last this many seconds"}],
                "responses": {"200": {"description": "the usage history"}}}},
            "/api/v1/policy": {"get": op("the scheduling policy: queues, groups, quotas (admins)", None, "200"),
                               "put": op("replace the scheduling policy; `version` must be the one read (admins)", Some("SchedPolicy"), "200")},
            "/api/v1/queues": {"get": op("every queue's use against its fair share, per user", None, "200")},
            "/api/v1/openapi.json": {"get": op("this document", None, "200")},
            "/api/v1/notebooks": {"post": op("start your notebook (JupyterLab at /user/NAME/, kernels with `spark` on your engine); answers at once with its state and url", None, "200")},
            "/api/v1/sessions": {"get": {"summary": "your Spark Connect engines and notebooks: state, kind, uptime, idle time, resources (all users' with all=true, admins)",
                "parameters": [{"name": "all", "in": "query", "schema": {"type": "boolean"}}],
                "responses": {"200": {"description": "{sessions: [...]}"}}}},
            "/api/v1/sessions/{id}": {"delete": op("stop one of your Spark Connect engines", None, "204"),
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "integer"}}]},
            "/api/v1/connect": {"get": op("how to reach the Spark Connect gateway: port, certificate names, CA (PEM)", None, "200")},
            "/api/v1/ca.pem": {"get": op("the CA certificate (PEM) that signed the gateway's certificate", None, "200")}
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": "hearth_session",
                    "description": "the web console's session; requests other than GET/HEAD must also send header x-hearth-csrf"}},
            "schemas": {
                "Error": {"type": "object", "properties": {"error": {"type": "object",
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}},
                "JobState": {"type": "string", "enum": ["queued", "starting", "running", "succeeded", "failed", "cancelled", "lost"]},
                "SessionRequest": {"type": "object", "required": ["user", "password"], "additionalProperties": false,
                    "properties": {"user": {"type": "string"}, "password": {"type": "string"}}},
                "LoginRequest": {"type": "object", "required": ["user", "password"], "additionalProperties": false,
                    "properties": {"user": {"type": "string"}, "password": {"type": "string"}, "token_name": {"type": "string"}}},
                "CreateUser": {"type": "object", "required": ["name"], "additionalProperties": false,
                    "properties": {"name": {"type": "string"}, "admin": {"type": "boolean"}, "password": {"type": "string"}}},
                "CreateToken": {"type": "object", "required": ["name"], "additionalProperties": false,
                    "properties": {"name": {"type": "string"}, "ttl_seconds": {"type": "integer", "minimum": 1},
                        "scope": {"type": "string", "enum": ["api", "connect"], "description": "api (default): everything its user may do; connect: Spark Connect only"}}},
                "ApproveNode": {"type": "object", "required": ["cores", "memory_mib"], "additionalProperties": false,
                    "properties": {"cores": {"type": "integer", "minimum": 0}, "memory_mib": {"type": "integer", "minimum": 0}}},
                "CreateNodeToken": {"type": "object", "additionalProperties": false,
                    "properties": {"ttl_seconds": {"type": "integer", "minimum": 1, "description": "default 3600"},
                        "uses": {"type": "integer", "minimum": 1, "maximum": 10000, "description": "how many machines may join with it; default 1"},
                        "max_cores": {"type": "integer", "minimum": 1, "description": "the most a node joining with it may offer"},
                        "max_memory_mib": {"type": "integer", "minimum": 1}}},
                                "FileRef": file_ref,
                "Quota": {"type": "object", "additionalProperties": false, "properties": {
                    "max_cores": {"type": "integer"}, "max_memory": {"type": "string"},
                    "max_running_jobs": {"type": "integer"}, "max_queued_jobs": {"type": "integer"}}},
                "SchedPolicy": {"type": "object", "additionalProperties": false, "properties": {
                    "version": {"type": "integer"},
                    "queues": {"type": "array", "items": {"type": "object", "required": ["name"], "additionalProperties": false, "properties": {
                        "name": {"type": "string"}, "weight": {"type": "integer", "minimum": 1},
                        "guaranteed": {"type": "object", "properties": {"cores": {"type": "integer"}, "memory": {"type": "string"}}},
                        "max": {"type": "object", "properties": {"cores": {"type": "integer"}, "memory": {"type": "string"}}},
                        "best_effort": {"type": "boolean"},
                        "open_to": {"type": "array", "items": {"type": "string"},
                            "description": "groups whose members may submit here besides those whose own queue it is; `default` is open to everyone"}}}},
                    "groups": {"type": "array", "items": {"type": "object", "required": ["name"], "additionalProperties": false, "properties": {
                        "name": {"type": "string"}, "queue": {"type": "string"},
                        "quota": {"$ref": "#/components/schemas/Quota"}, "member_quota": {"$ref": "#/components/schemas/Quota"}}}},
                    "users": {"type": "object", "additionalProperties": {"type": "object", "additionalProperties": false, "properties": {
                        "group": {"type": "string"}, "quota": {"$ref": "#/components/schemas/Quota"},
                        "max_priority": {"type": "string", "enum": ["low", "normal", "high"]}}}},
                    "preemption_grace_seconds": {"type": "integer"}}},
                "SubmitJob": {"type": "object", "required": ["main"], "additionalProperties": false,
                    "properties": {
                        "name": {"type": "string"}, "main": {"$ref": "#/components/schemas/FileRef"},
                        "class": {"type": "string"}, "args": {"type": "array", "items": {"type": "string"}},
                        "conf": {"type": "object", "additionalProperties": {"type": "string"}},
                        "py_files": files, "files": files, "archives": files, "jars": files,
                        "resources": {"type": "object", "additionalProperties": false, "properties": {
                            "driver_cores": {"type": "integer", "minimum": 1},
                            "driver_memory": {"type": "string", "examples": ["2g"]},
                            "executor_cores": {"type": "integer", "minimum": 1},
                            "executor_memory": {"type": "string", "examples": ["4g"]},
                                                        "num_executors": {"type": "integer", "minimum": 0}}},
                        "queue": {"type": "string"},
                        "priority": {"type": "string", "enum": ["low", "normal", "high"]},
                        "preemptible": {"type": "boolean"},
                        "constraints": {"type": "array", "items": {"type": "string", "examples": ["disk=ssd"]}}}}
            }
        }
    })
}

pub async fn serve(_caller: Caller) -> Json<Value> {
    Json(document())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn the_document_lists_exactly_the_routes() {
        let doc = document();
        let mut in_doc = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in ["get", "post", "put", "delete"] {
                if item.get(method).is_some() {
                    in_doc.insert((method.to_string(), path.clone()));
                }
            }
        }
        let routes: BTreeSet<(String, String)> = super::super::ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        assert_eq!(in_doc, routes);
    }
}
