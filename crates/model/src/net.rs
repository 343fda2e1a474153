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

impl Cidr {
    /// [`FromStr`] for a command-line parser.
    pub fn from_str_arg(s: &str) -> Result<Cidr, String> {
        s.parse()
    }

    /// Whether every address of `other` is in this network.
    pub fn covers(&self, other: &Cidr) -> bool {
        self.len <= other.len && self.contains(other.addr)
    }
}

impl Egress {
    /// What both allow: a task under a queue's, its group's and its user's egress may go
    /// only where all of them let it.
    pub fn and(&self, other: &Egress) -> Egress {
        match (self, other) {
            (Egress::None, _) | (_, Egress::None) => Egress::None,
            (Egress::Open, x) | (x, Egress::Open) => x.clone(),
            (Egress::Only(a), Egress::Only(b)) => {
                // Two networks overlap only when one holds the other: the smaller is what
                // both allow.
                let mut both: Vec<Cidr> = Vec::new();
                for x in a {
                    for y in b {
                        let overlap = if x.covers(y) {
                            Some(*y)
                        } else if y.covers(x) {
                            Some(*x)
                        } else {
                            None
                        };
                        if let Some(c) = overlap.filter(|c| !both.contains(c)) {
                            both.push(c);
                        }
                    }
                }
                if both.is_empty() {
                    Egress::None
                } else {
                    Egress::Only(both)
                }
            }
        }
    }

    /// `open`, `none`, or networks separated by commas (`10.1.0.0/16,203.0.113.7`): how a
    /// command line writes it.
    pub fn parse(s: &str) -> Result<Egress, String> {
        match s.trim() {
            "open" => Ok(Egress::Open),
            "none" => Ok(Egress::None),
            list => {
                let nets = list
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<Vec<Cidr>, String>>()
                    .map_err(|e| format!("{e}; or write `open` or `none`"))?;
                Ok(Egress::Only(nets))
            }
        }
    }
}

impl fmt::Display for Egress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Egress::Open => write!(f, "open"),
            Egress::None => write!(f, "none"),
            Egress::Only(nets) => {
                let nets: Vec<String> = nets.iter().map(Cidr::to_string).collect();
                write!(f, "{}", nets.join(","))
            }
        }
    }
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

    #[test]
    fn egress_of_a_queue_a_group_and_a_user_is_what_all_allow() {
        let e = |s: &str| Egress::parse(s).expect("egress");
        assert_eq!(e("open").and(&e("none")), Egress::None);
        assert_eq!(e("open").and(&e("10.1.0.0/16")), e("10.1.0.0/16"));
        assert_eq!(
            e("10.0.0.0/8").and(&e("10.1.0.0/16,192.168.1.0/24")),
            e("10.1.0.0/16")
        );
        assert_eq!(e("10.1.0.0/16").and(&e("10.2.0.0/16")), Egress::None);
        assert_eq!(e("1.2.3.4,5.6.7.0/24").to_string(), "1.2.3.4/32,5.6.7.0/24");
        let err = Egress::parse("example.com").expect_err("not a network");
        assert!(err.contains("`open` or `none`"), "{err}");
        let json = serde_json::to_string(&e("10.0.0.0/8")).expect("json");
        assert_eq!(json, r#"{"only":["10.0.0.0/8"]}"#);
        assert_eq!(
            serde_json::to_string(&Egress::None).expect("json"),
            r#""none""#
        );
    }
}
