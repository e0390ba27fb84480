//! Everything with a socket: the listener and its limits, the startup handshake, and one
//! task per client relaying frames in both directions.

mod handshake;
mod heap;
pub mod login;
mod observe;
mod pump;
mod server;
mod session;
mod workers;

pub use server::{Proxy, ProxyHandle};
