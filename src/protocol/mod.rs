//! The PostgreSQL wire protocol, as far as pgcloak needs it: framing, the startup-phase
//! packets, and the messages the proxy writes itself. No sockets here; everything is
//! tested on bytes.

pub mod error;
pub mod filter;
pub mod frame;
pub mod messages;
pub mod startup;
pub mod tags;
