#![allow(dead_code, unreachable_pub)]

pub mod client;
pub mod db;
pub mod http;
pub mod server;
