//! Isolation as a user of Hearth would meet it: real Linux users, real sandboxes, real
//! cgroups. Needs root, bubblewrap, setpriv and cgroups; each test says "skipped" otherwise.

mod common;
mod freezer;
mod fsaccess;
mod network;
mod portguard;
mod sandbox;
mod users;
