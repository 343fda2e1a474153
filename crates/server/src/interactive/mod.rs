//! Interactive Spark: each user's engines (Spark Connect, Sail, notebooks), admitted by
//! the scheduler, and the Spark Connect gateway (with its relay) that reaches them.

pub mod engines;
pub mod gateway;
pub mod relay;
pub mod upstream;
