//! Login limits: failed logins are counted per account name from one address, per address
//! and per account name, and past a few free failures each further one makes the next
//! attempt wait (1 s, doubling up to a few minutes). A refused attempt is answered before
//! any Argon2 work. Unknown names are counted like real ones, so a refusal never says
//! whether an account exists. Pure: the clock is passed in; memory is capped.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;

#[derive(Clone, Debug)]
pub struct Limits {
    /// Free failures for one account name from one address.
    pub per_pair: u32,
    /// Free failures from one address, whatever the names.
    pub per_address: u32,
    /// Free failures for one account name, whatever the addresses (many addresses guessing).
    pub per_account: u32,
    /// Failures are forgotten after this long without one.
    pub window_ms: i64,
    /// The first wait past the free failures; each further failure doubles it.
    pub first_backoff_ms: i64,
    pub max_backoff_ms: i64,
    /// Entries kept per table; the oldest go first.
    pub max_entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            per_pair: 5,
            per_address: 20,
            per_account: 100,
            window_ms: 15 * 60_000,
            first_backoff_ms: 1_000,
            max_backoff_ms: 5 * 60_000,
            max_entries: 10_000,
        }
    }
}

/// Why an attempt is refused: a message for the person and when to try again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    pub retry_after_s: u64,
    pub message: String,
}

/// An attempt let through: tell the limiter how it ended with [`LoginLimiter::succeeded`]
/// or [`LoginLimiter::abandoned`]; otherwise it stays counted as a failure.
#[derive(Clone, Debug)]
pub struct Attempt {
    account: String,
    address: IpAddr,
}

#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    failures: u32,
    last_ms: i64,
    blocked_until: i64,
}

struct Table<K> {
    map: HashMap<K, Entry>,
}

impl<K: Hash + Eq + Clone> Table<K> {
    fn new() -> Self {
        Table {
            map: HashMap::new(),
        }
    }

    /// When `key` may try again, if not now.
    fn blocked(&mut self, key: &K, limits: &Limits, now: i64) -> Option<i64> {
        let e = self.map.get(key)?;
        if e.blocked_until > now {
            return Some(e.blocked_until);
        }
        if now - e.last_ms > limits.window_ms {
            self.map.remove(key);
        }
        None
    }

    /// Counts one failure, starting a wait past the `free` ones.
    fn fail(&mut self, key: &K, free: u32, limits: &Limits, now: i64) {
        if !self.map.contains_key(key) && self.map.len() >= limits.max_entries {
            self.evict(limits, now);
        }
        let e = self.map.entry(key.clone()).or_default();
        e.failures = e.failures.saturating_add(1);
        e.last_ms = now;
        e.blocked_until = blocked_until(e, free, limits);
    }

    /// Takes back one counted failure (an attempt that ended without a verdict on it).
    fn undo(&mut self, key: &K, free: u32, limits: &Limits) {
        if let Some(e) = self.map.get_mut(key) {
            e.failures = e.failures.saturating_sub(1);
            e.blocked_until = blocked_until(e, free, limits);
            if e.failures == 0 {
                self.map.remove(key);
            }
        }
    }

    /// Room for one more: drops forgotten entries, then the oldest quarter if still full.
    fn evict(&mut self, limits: &Limits, now: i64) {
        self.map
            .retain(|_, e| e.blocked_until > now || now - e.last_ms <= limits.window_ms);
        if self.map.len() < limits.max_entries {
            return;
        }
        let mut ages: Vec<i64> = self.map.values().map(|e| e.last_ms).collect();
        let cut = ages.len() / 4;
        let (_, oldest_kept, _) = ages.select_nth_unstable(cut);
        let oldest_kept = *oldest_kept;
        self.map.retain(|_, e| e.last_ms >= oldest_kept);
        // Many entries of the same age: drop arbitrary ones until there is room.
        while self.map.len() >= limits.max_entries {
            let Some(k) = self.map.keys().next().cloned() else {
                break;
            };
            self.map.remove(&k);
        }
    }
}

fn blocked_until(e: &Entry, free: u32, limits: &Limits) -> i64 {
    if e.failures <= free {
        return 0;
    }
    let doublings = (e.failures - free - 1).min(30);
    let wait = limits
        .first_backoff_ms
        .saturating_mul(1i64 << doublings)
        .min(limits.max_backoff_ms);
    e.last_ms.saturating_add(wait)
}

struct State {
    pairs: Table<(String, IpAddr)>,
    addresses: Table<IpAddr>,
    accounts: Table<String>,
}

pub struct LoginLimiter {
    limits: Limits,
    state: Mutex<State>,
}

/// Names longer than any valid one are cut, so a key's size is bounded.
const MAX_NAME: usize = 64;

/// The key of an address: IPv6 by its /64 (what one host is usually given), IPv4 as is.
fn address_key(a: IpAddr) -> IpAddr {
    match a.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

fn account_key(name: &str) -> String {
    name.chars().take(MAX_NAME).collect()
}

impl LoginLimiter {
    pub fn new(limits: Limits) -> Self {
        LoginLimiter {
            limits,
            state: Mutex::new(State {
                pairs: Table::new(),
                addresses: Table::new(),
                accounts: Table::new(),
            }),
        }
    }

    /// Lets a login of `account` from `address` go ahead (counted as a failure until it
    /// succeeds), or says why not and for how long.
    pub fn begin(&self, account: &str, address: IpAddr, now_ms: i64) -> Result<Attempt, Refused> {
        let account = account_key(account);
        let address = address_key(address);
        let l = &self.limits;
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let pair = (account.clone(), address);
        let waits = [
            s.pairs.blocked(&pair, l, now_ms).map(|u| {
                (
                    u,
                    format!("too many failed logins for {account} from this address"),
                )
            }),
            s.addresses
                .blocked(&address, l, now_ms)
                .map(|u| (u, "too many failed logins from this address".to_string())),
            s.accounts
                .blocked(&account, l, now_ms)
                .map(|u| (u, format!("too many failed logins for {account}"))),
        ];
        if let Some((until, why)) = waits.into_iter().flatten().max_by_key(|(u, _)| *u) {
            let retry_after_s = u64::try_from((until - now_ms + 999) / 1000)
                .unwrap_or(1)
                .max(1);
            return Err(Refused {
                retry_after_s,
                message: format!("{why}: try again in {retry_after_s} s"),
            });
        }
        s.pairs.fail(&pair, l.per_pair, l, now_ms);
        s.addresses.fail(&address, l.per_address, l, now_ms);
        s.accounts.fail(&account, l.per_account, l, now_ms);
        Ok(Attempt { account, address })
    }

    /// The password was right: the account's failures from this address and its count
    /// across addresses are forgotten, and this attempt is not held against the address (its
    /// other failures still are). A guesser elsewhere gains nothing from it.
    pub fn succeeded(&self, attempt: &Attempt) {
        let l = &self.limits;
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.pairs
            .map
            .remove(&(attempt.account.clone(), attempt.address));
        s.accounts.map.remove(&attempt.account);
        s.addresses.undo(&attempt.address, l.per_address, l);
    }

    /// The attempt ended before the password was checked (the server was too busy).
    pub fn abandoned(&self, attempt: &Attempt) {
        let l = &self.limits;
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.pairs
            .undo(&(attempt.account.clone(), attempt.address), l.per_pair, l);
        s.addresses.undo(&attempt.address, l.per_address, l);
        s.accounts.undo(&attempt.account, l.per_account, l);
    }

    /// Entries held, all tables together.
    pub fn len(&self) -> usize {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.pairs.map.len() + s.addresses.map.len() + s.accounts.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    fn small() -> Limits {
        Limits {
            per_pair: 3,
            per_address: 6,
            per_account: 10,
            window_ms: 60_000,
            first_backoff_ms: 1_000,
            max_backoff_ms: 8_000,
            max_entries: 100,
        }
    }

    /// `n` failed attempts, all let through.
    fn fail(l: &LoginLimiter, name: &str, a: IpAddr, n: u32, now: i64) {
        for i in 0..n {
            l.begin(name, a, now)
                .unwrap_or_else(|r| panic!("attempt {i} refused: {}", r.message));
        }
    }

    #[test]
    fn the_wait_grows_after_the_free_failures_then_caps() {
        let l = LoginLimiter::new(small());
        let a = ip("10.0.0.1");
        // 3 free failures, and a fourth let through that starts the wait.
        fail(&l, "alice", a, 4, 0);
        let r = l.begin("alice", a, 0).expect_err("refused");
        assert_eq!(r.retry_after_s, 1);
        assert_eq!(
            r.message,
            "too many failed logins for alice from this address: try again in 1 s"
        );
        // After each wait one attempt goes through, and the next wait is twice as long.
        let mut now = 1_000;
        for expected in [2, 4, 8, 8, 8] {
            assert!(l.begin("alice", a, now).is_ok(), "at {now}");
            let r = l.begin("alice", a, now).expect_err("refused");
            assert_eq!(r.retry_after_s, expected, "{}", r.message);
            now += expected as i64 * 1_000;
        }
        now -= 8_000;
        // A refused attempt does not lengthen the wait.
        let again = l.begin("alice", a, now + 500).expect_err("refused");
        assert_eq!(again.retry_after_s, 8);
    }

    #[test]
    fn a_refusal_rounds_up_and_ends_on_time() {
        let l = LoginLimiter::new(small());
        let a = ip("10.0.0.1");
        fail(&l, "alice", a, 4, 1_000);
        assert_eq!(
            l.begin("alice", a, 1_400)
                .expect_err("refused")
                .retry_after_s,
            1
        );
        assert!(l.begin("alice", a, 2_000).is_ok());
    }

    #[test]
    fn a_success_forgets_the_accounts_failures() {
        let l = LoginLimiter::new(small());
        let a = ip("10.0.0.1");
        fail(&l, "alice", a, 3, 0);
        let ok = l.begin("alice", a, 0).expect("fourth attempt");
        l.succeeded(&ok);
        fail(&l, "alice", a, 3, 0);
        assert!(l.begin("alice", a, 0).is_ok());
    }

    #[test]
    fn other_accounts_and_addresses_are_not_affected() {
        let l = LoginLimiter::new(small());
        let (a, b) = (ip("10.0.0.1"), ip("10.0.0.2"));
        fail(&l, "alice", a, 4, 0);
        assert!(l.begin("alice", a, 0).is_err());
        // Alice from elsewhere, and bob from the same address, may still try.
        let from_b = l.begin("alice", b, 0).expect("alice from b");
        l.succeeded(&from_b);
        let bob = l.begin("bob", a, 0).expect("bob from a");
        l.succeeded(&bob);
        // Alice's success elsewhere does not give the guesser at `a` more tries.
        assert!(l.begin("alice", a, 0).is_err());
    }

    #[test]
    fn an_address_is_limited_across_names() {
        let l = LoginLimiter::new(small());
        let (a, b) = (ip("10.0.0.1"), ip("10.0.0.2"));
        for i in 0..7 {
            fail(&l, &format!("user{i}"), a, 1, 0);
        }
        let r = l.begin("carol", a, 0).expect_err("refused");
        assert_eq!(
            r.message,
            "too many failed logins from this address: try again in 1 s"
        );
        assert!(l.begin("carol", b, 0).is_ok());
        // One /64 is one address.
        let (v6a, v6b) = (ip("2001:db8::1"), ip("2001:db8::ffff:2"));
        for i in 0..7 {
            fail(&l, &format!("v{i}"), v6a, 1, 0);
        }
        assert!(l.begin("dave", v6b, 0).is_err());
        assert!(l.begin("dave", ip("2001:db8:0:1::1"), 0).is_ok());
    }

    #[test]
    fn an_account_is_limited_across_addresses() {
        let l = LoginLimiter::new(small());
        for i in 0..11 {
            fail(&l, "alice", ip(&format!("10.0.1.{i}")), 1, 0);
        }
        let r = l.begin("alice", ip("10.0.2.1"), 0).expect_err("refused");
        assert_eq!(
            r.message,
            "too many failed logins for alice: try again in 1 s"
        );
        assert!(l.begin("bob", ip("10.0.2.1"), 0).is_ok());
    }

    #[test]
    fn failures_are_forgotten_after_a_quiet_window() {
        let l = LoginLimiter::new(small());
        let a = ip("10.0.0.1");
        fail(&l, "alice", a, 4, 0);
        assert!(l.begin("alice", a, 500).is_err());
        // A minute without failures: three free ones again.
        fail(&l, "alice", a, 4, 70_000);
        assert_eq!(
            l.begin("alice", a, 70_000)
                .expect_err("refused")
                .retry_after_s,
            1
        );
    }

    #[test]
    fn a_success_does_not_clear_the_addresss_other_failures() {
        let l = LoginLimiter::new(small());
        let a = ip("10.0.0.1");
        for i in 0..6 {
            fail(&l, &format!("user{i}"), a, 1, 0);
        }
        let mine = l.begin("mallory", a, 0).expect("own account");
        l.succeeded(&mine);
        // The success took back only its own attempt: six failures, none free left.
        fail(&l, "x", a, 1, 0);
        assert!(l.begin("y", a, 0).is_err());
    }

    #[test]
    fn an_abandoned_attempt_is_not_counted() {
        let l = LoginLimiter::new(small());
        let a = ip("10.0.0.1");
        for _ in 0..10 {
            let t = l.begin("alice", a, 0).expect("attempt");
            l.abandoned(&t);
        }
        assert!(l.is_empty());
    }

    #[test]
    fn memory_is_bounded() {
        let l = LoginLimiter::new(small());
        for i in 0..5_000u32 {
            let a = IpAddr::V4((0x0a00_0000 + i).into());
            let _ = l.begin(&format!("name{i}"), a, i64::from(i));
        }
        assert!(l.len() <= 3 * 100, "{}", l.len());
        // A very long name is kept short.
        let long = "a".repeat(10_000);
        fail(&l, &long, ip("10.9.9.9"), 4, 10_000);
        let r = l.begin(&long, ip("10.9.9.9"), 10_000).expect_err("refused");
        assert!(r.message.len() < 200, "{}", r.message);
    }
}
