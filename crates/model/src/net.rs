//! Networks as tasks see them: IPv4 ranges, and where a task may connect beyond its own
//! network namespace (its egress). Enforced by `hearth_agent::net`; chosen by the policy.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 network, `a.b.c.d/len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cidr {
    addr: Ipv4Addr,
    len: u8,
}

impl Cidr {
    pub fn new(addr: Ipv4Addr, len: u8) -> Result<Cidr, String> {
        if len > 32 {
            return Err(format!("{addr}/{len}: the prefix length is at most 32"));
        }
        let mask = Self::mask(len);
        if u32::from(addr) & !mask != 0 {
            let net = Ipv4Addr::from(u32::from(addr) & mask);
            return Err(format!(
                "{addr}/{len} has host bits set: did you mean {net}/{len}?"
            ));
        }
        Ok(Cidr { addr, len })
    }

    fn mask(len: u8) -> u32 {
        if len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(len))
        }
    }

    /// Its first address.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & Self::mask(self.len) == u32::from(self.addr)
    }

    /// How many addresses it holds.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.len))
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Cidr, String> {
        let s = s.trim();
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, l),
            None => (s, "32"),
        };
        let addr: Ipv4Addr = addr.parse().map_err(|_| {
            format!("`{s}` is not an IPv4 network: write it as 10.0.0.0/8 (or one address)")
        })?;
        let len: u8 = len
            .parse()
            .map_err(|_| format!("`{s}`: the prefix length must be a number from 0 to 32"))?;
        Cidr::new(addr, len)
    }
}

impl TryFrom<String> for Cidr {
    type Error = String;
    fn try_from(s: String) -> Result<Cidr, String> {
        s.parse()
    }
}

impl From<Cidr> for String {
    fn from(c: Cidr) -> String {
        c.to_string()
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// Where a task may open connections beyond its own namespace, besides Hearth's endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Egress {
    /// Anywhere outside this machine but the never-reachable and denied networks.
    Open,
    /// Nowhere.
    None,
    /// Only these networks (still never the never-reachable or denied ones).
    Only(Vec<Cidr>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_parse_and_refuse_what_is_not_one() {
        let c: Cidr = "10.213.0.0/16".parse().expect("cidr");
        assert!(c.contains("10.213.255.1".parse().expect("ip")));
        assert!(!c.contains("10.214.0.1".parse().expect("ip")));
        assert_eq!(
            "1.2.3.4".parse::<Cidr>().expect("one").to_string(),
            "1.2.3.4/32"
        );
        let e = "10.213.0.1/16".parse::<Cidr>().expect_err("host bits");
        assert!(e.contains("did you mean 10.213.0.0/16"), "{e}");
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("example.com".parse::<Cidr>().is_err());
        assert_eq!("0.0.0.0/0".parse::<Cidr>().expect("all").size(), 1 << 32);
    }
}
