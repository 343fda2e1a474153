//! Passwords and tokens. Both are stored only as salted Argon2 hashes. A token reads
//! `hth_<id>_<secret>`: the id finds the row, the slow hash checks the secret once, and a
//! verified token is then remembered (by a fast digest) until it is revoked or expires.

use crate::error::{ApiError, ApiResult};
use crate::store::{now_ms, Store, TokenRow, UserRow};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

pub mod limit;

/// Random bytes from the OS, hex-encoded.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    // getrandom only fails if the OS has no entropy source at all; then nothing is safe.
    getrandom::getrandom(&mut buf).expect("the OS random source failed");
    hex::encode(buf)
}

/// A password people can type: 20 characters from an unambiguous alphabet (~100 bits).
pub fn generate_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut buf = [0u8; 20];
    getrandom::getrandom(&mut buf).expect("the OS random source failed");
    buf.iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// Argon2id with OWASP's 7 MiB / 5 passes setting: as slow as its 19 MiB / 2 passes one,
/// with less memory held by an idle server.
fn argon2() -> Argon2<'static> {
    let params = argon2::Params::new(7 * 1024, 5, 1, None).expect("valid Argon2 parameters");
    Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
}

/// Hands the hash's working memory back to the OS: the allocator would otherwise keep it
/// per thread, and an idle server would sit on tens of MB.
fn release_memory() {
    // SAFETY: malloc_trim only returns free heap memory to the OS.
    unsafe { libc::malloc_trim(0) };
}

pub fn hash_secret(secret: &str) -> String {
    let mut salt = [0u8; 16];
    getrandom::getrandom(&mut salt).expect("the OS random source failed");
    let salt = SaltString::encode_b64(&salt).expect("16 bytes is a valid salt");
    let hash = argon2()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .expect("argon2 with valid parameters cannot fail");
    release_memory();
    hash
}

/// A real hash of nothing in particular, checked against when a login names an unknown
/// user, so that a wrong name costs the same time as a wrong password.
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_secret("no such user"))
}

/// Checks a secret against a stored hash (whatever parameters it was made with).
pub fn verify_secret(secret: &str, hash: &str) -> bool {
    let ok = PasswordHash::new(hash)
        .map(|h| argon2().verify_password(secret.as_bytes(), &h).is_ok())
        .unwrap_or(false);
    release_memory();
    ok
}

/// Checks a user name for the rules Hearth keeps: short, lowercase, safe in paths and URLs.
pub fn check_user_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a valid user name: use 1-32 lowercase letters, digits, - or _, starting with a letter"
        ))
    }
}

pub struct NewToken {
    pub row: TokenRow,
    pub secret: String,
}

/// Creates a token for `user`; the caller stores `row` and shows `secret` once.
/// What a token opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Everything its user may do: the REST API, the console, the door, Spark Connect.
    Api,
    /// Spark Connect only (the gateway): what a notebook's kernels and `hearth connect`
    /// hold, so that code running there cannot drive the API as its user.
    Connect,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Api => "api",
            Scope::Connect => "connect",
        }
    }

    /// A stored or requested scope; an unknown word opens nothing beyond Spark Connect.
    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "api" => Some(Scope::Api),
            "connect" => Some(Scope::Connect),
            _ => None,
        }
    }

    /// Whether a token of this scope may be used where `need` is required.
    pub fn opens(self, need: Scope) -> bool {
        self == Scope::Api || self == need
    }
}

pub fn new_token(user: &UserRow, name: &str, ttl_seconds: Option<u64>, scope: Scope) -> NewToken {
    let secret = random_hex(32);
    let now = now_ms();
    NewToken {
        row: TokenRow {
            id: 0,
            user_id: user.id,
            name: name.to_string(),
            secret_hash: hash_secret(&secret),
            created_at: now,
            expires_at: ttl_seconds.map(|t| {
                now.saturating_add(i64::try_from(t).unwrap_or(i64::MAX).saturating_mul(1000))
            }),
            last_used_at: None,
            scope: scope.as_str().to_string(),
        },
        secret,
    }
}

pub fn format_token(id: i64, secret: &str) -> String {
    format!("hth_{id}_{secret}")
}

struct Verified {
    digest: [u8; 32],
    user_id: i64,
    scope: Scope,
    expires_at: Option<i64>,
    last_touched: i64,
}

/// The longest lifetime a token may ask for: ten years.
pub const MAX_TTL_SECONDS: u64 = 10 * 366 * 86_400;

/// Remembers verified tokens so that only the first use pays for Argon2.
#[derive(Default)]
pub struct TokenCache {
    verified: Mutex<HashMap<i64, Verified>>,
}

pub enum TokenCheck {
    Valid { user_id: i64, scope: Scope },
    Invalid(&'static str),
}

/// The id part of a well-formed token.
pub fn token_id(token: &str) -> Option<i64> {
    parse_token(token).map(|(id, _)| id)
}

fn parse_token(token: &str) -> Option<(i64, &str)> {
    token
        .strip_prefix("hth_")
        .and_then(|rest| rest.split_once('_'))
        .and_then(|(id, secret)| id.parse::<i64>().ok().map(|id| (id, secret)))
}

const MALFORMED: &str = "the token is malformed: Hearth tokens look like hth_<id>_<secret>";
const EXPIRED: &str = "the token has expired: log in again or create a new token";

impl TokenCache {
    /// Decides from memory alone, when it can (a token verified before, or a malformed
    /// one). Cheap: safe to call on an async worker.
    pub fn check_cached(
        &self,
        store: &Store,
        token: &str,
    ) -> Result<Option<TokenCheck>, rusqlite::Error> {
        let Some((id, secret)) = parse_token(token) else {
            return Ok(Some(TokenCheck::Invalid(MALFORMED)));
        };
        let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let now = now_ms();
        let mut cache = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        let Some(v) = cache.get_mut(&id) else {
            return Ok(None);
        };
        if v.digest != digest {
            return Ok(Some(TokenCheck::Invalid("the token is not valid")));
        }
        if v.expires_at.is_some_and(|e| e <= now) {
            cache.remove(&id);
            return Ok(Some(TokenCheck::Invalid(EXPIRED)));
        }
        let (user_id, scope) = (v.user_id, v.scope);
        // Recording use costs a write; once a minute is precise enough.
        if now - v.last_touched > 60_000 {
            v.last_touched = now;
            drop(cache);
            store.touch_token(id, now)?;
        }
        Ok(Some(TokenCheck::Valid { user_id, scope }))
    }

    /// The full check: the stored row and its slow hash. Blocks for tens of milliseconds:
    /// call it on a blocking thread.
    pub fn verify(&self, store: &Store, token: &str) -> Result<TokenCheck, rusqlite::Error> {
        let Some((id, secret)) = parse_token(token) else {
            return Ok(TokenCheck::Invalid(MALFORMED));
        };
        let now = now_ms();
        let Some(row) = store.token(id)? else {
            return Ok(TokenCheck::Invalid(
                "the token is not valid (revoked or never issued): log in again",
            ));
        };
        if row.expires_at.is_some_and(|e| e <= now) {
            return Ok(TokenCheck::Invalid(EXPIRED));
        }
        if !verify_secret(secret, &row.secret_hash) {
            return Ok(TokenCheck::Invalid("the token is not valid"));
        }
        store.touch_token(id, now)?;
        let mut cache = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        // Revoked while we hashed? A revoke deletes the row before it takes this lock to
        // forget, so looking again under the lock cannot miss it.
        if store.token(id)?.is_none() {
            return Ok(TokenCheck::Invalid(
                "the token is not valid (revoked or never issued): log in again",
            ));
        }
        let scope = Scope::parse(&row.scope).unwrap_or(Scope::Connect);
        cache.insert(
            id,
            Verified {
                digest: Sha256::digest(secret.as_bytes()).into(),
                user_id: row.user_id,
                scope,
                expires_at: row.expires_at,
                last_touched: now,
            },
        );
        Ok(TokenCheck::Valid {
            user_id: row.user_id,
            scope,
        })
    }

    /// Forgets a revoked token at once.
    pub fn forget(&self, token_id: i64) {
        self.verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&token_id);
    }

    /// Forgets every token of a removed user.
    pub fn forget_user(&self, user_id: i64) {
        self.verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, v| v.user_id != user_id);
    }
}

/// The user a Hearth token belongs to, if it is valid and opens `need`; else why not (a
/// token for Spark Connect only, used on the API: 403). The one token check, shared by the
/// REST API, the door and the Spark Connect gateway.
pub async fn user_for_token(
    app: &std::sync::Arc<crate::App>,
    token: &str,
    need: Scope,
) -> crate::error::ApiResult<crate::store::UserRow> {
    let check = match app.tokens.check_cached(&app.store, token)? {
        Some(c) => c,
        None => {
            // Argon2 is slow on purpose: off the async workers, and only a few at once,
            // so a flood of made-up tokens cannot stall the API for everyone else.
            let _slot = app.hashing.acquire().await?;
            let (app2, token) = (app.clone(), token.to_string());
            tokio::task::spawn_blocking(move || app2.tokens.verify(&app2.store, &token))
                .await
                .map_err(|e| crate::error::ApiError::internal("checking the token", e))??
        }
    };
    match check {
        TokenCheck::Valid { scope, .. } if !scope.opens(need) => {
            Err(crate::error::ApiError::forbidden(
                "this token opens Spark Connect only (a notebook kernel's, or `hearth connect`'s): use your own login or a token from `hearth token create` for the API",
            ))
        }
        TokenCheck::Valid { user_id, .. } => match app.store.user_by_id(user_id)? {
            Some(u) => Ok(u),
            None => Err(crate::error::ApiError::unauthorized(
                "the token's user no longer exists",
            )),
        },
        TokenCheck::Invalid(why) => Err(crate::error::ApiError::unauthorized(why)),
    }
}

/// Bounds Argon2 work: a few hashes at once, a bounded number of requests waiting for
/// one; past that, an immediate 429 rather than a queue that grows without end.
pub struct Hashing {
    slots: tokio::sync::Semaphore,
    waiting: AtomicUsize,
    max_waiting: usize,
}

/// Gives back a waiting place, even when the waiting request is dropped.
struct WaitingPlace<'a>(&'a AtomicUsize);

impl Drop for WaitingPlace<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Hashing {
    pub fn new(slots: usize, max_waiting: usize) -> Self {
        Hashing {
            slots: tokio::sync::Semaphore::new(slots),
            waiting: AtomicUsize::new(0),
            max_waiting,
        }
    }

    /// A slot to hash in, or a 429 at once when too many requests already wait for one.
    pub async fn acquire(&self) -> ApiResult<tokio::sync::SemaphorePermit<'_>> {
        if let Ok(permit) = self.slots.try_acquire() {
            return Ok(permit);
        }
        let waiting = self.waiting.fetch_add(1, Ordering::SeqCst);
        let _place = WaitingPlace(&self.waiting);
        if waiting >= self.max_waiting {
            return Err(ApiError::too_many_requests(
                "busy",
                "the server is checking too many passwords and tokens at once: try again in 1 s",
                1,
            ));
        }
        self.slots
            .acquire()
            .await
            .map_err(|e| ApiError::internal("waiting to check a secret", e))
    }
}

/// Checks a login's password under the login limits: refused with a 429 before any Argon2
/// work when the name or the address failed too often (or too many hashes wait already);
/// the user when the password is right.
pub async fn check_login(
    app: &Arc<crate::App>,
    name: &str,
    password: String,
    address: IpAddr,
) -> ApiResult<UserRow> {
    let attempt = app
        .logins
        .begin(name, address, now_ms())
        .map_err(|r| ApiError::too_many_requests("too_many_logins", r.message, r.retry_after_s))?;
    let slot = match app.hashing.acquire().await {
        Ok(slot) => slot,
        Err(e) => {
            app.logins.abandoned(&attempt);
            return Err(e);
        }
    };
    let user = app.store.user_by_name(name)?;
    // Verify even for an unknown user, so timing does not reveal who exists.
    let hash = user
        .as_ref()
        .map(|u| u.password_hash.clone())
        .unwrap_or_else(|| dummy_hash().to_string());
    let ok = tokio::task::spawn_blocking(move || verify_secret(&password, &hash))
        .await
        .unwrap_or(false);
    drop(slot);
    match user.filter(|_| ok) {
        Some(user) => {
            app.logins.succeeded(&attempt);
            Ok(user)
        }
        None => Err(ApiError::unauthorized("wrong user name or password")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_verify_only_against_their_own_hash() {
        let h = hash_secret("correct horse");
        assert!(h.starts_with("$argon2id$v=19$m=7168,t=5,p=1$"), "{h}");
        assert!(verify_secret("correct horse", &h));
        assert!(!verify_secret("correct horse!", &h));
        assert!(!verify_secret("x", "not a hash"));
    }

    #[test]
    fn user_names_are_checked() {
        assert!(check_user_name("alice").is_ok());
        assert!(check_user_name("data-eng_2").is_ok());
        for bad in ["", "Alice", "1abc", "a/b", "a b", &"x".repeat(33)] {
            assert!(check_user_name(bad).is_err(), "{bad}");
        }
    }
}
