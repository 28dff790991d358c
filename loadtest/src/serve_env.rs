//! `ferry-load serve-env`: the environment of a Ferry server under load (limits
//! lifted, a throwaway server key), printed for a shell or handed to a child
//! process by the scenarios that start their own server (`crash`, `flood`).

use ed25519_dalek::SigningKey;
use ferry_proto::b64u;

/// Arguments of `ferry-load serve-env`.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeEnvArgs {
    /// The server key seed (b64u, 32 bytes); default: a fresh random one. Keep it
    /// across runs to keep the pinned public key.
    #[arg(long)]
    seed: Option<String>,
}

/// The limits a load test lifts (name, value, why).
const LOAD_LIMITS: &[(&str, &str, &str)] = &[
    (
        "FERRY_LIMITS_EVENTS_PER_SEC",
        "1000000",
        "publishes per second per device",
    ),
    ("FERRY_LIMITS_BURST", "10000000", "publish burst per device"),
    (
        "FERRY_LIMITS_HANDSHAKES_PER_IP_PER_SEC",
        "100000",
        "all handshakes come from a few loopback addresses",
    ),
    (
        "FERRY_LIMITS_MAX_CONNECTIONS_PER_IP",
        "100000",
        "so do all connections",
    ),
    (
        "FERRY_LIMITS_MAX_CONNECTIONS",
        "100000",
        "idle holds ~19,000 sessions",
    ),
    (
        "FERRY_LIMITS_OUTBOUND_QUEUE",
        "65536",
        "queued messages per session before 4009",
    ),
    (
        "FERRY_LIMITS_OUTBOUND_QUEUE_BYTES",
        "268435456",
        "and their bytes (64 KiB payloads queue up fast)",
    ),
];

/// A fresh random key seed.
pub(crate) fn random_seed() -> [u8; 32] {
    let mut s = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut s);
    s
}

/// The server's public key (b64u) for a key seed: what a client pins.
pub(crate) fn public_key(seed: &[u8; 32]) -> String {
    b64u::encode(SigningKey::from_bytes(seed).verifying_key().as_bytes())
}

/// The environment of a server under load: the lifted limits and `FERRY_SERVER_KEY`.
pub(crate) fn vars(seed: &[u8; 32]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = LOAD_LIMITS
        .iter()
        .map(|(name, value, _)| ((*name).to_string(), (*value).to_string()))
        .collect();
    v.push(("FERRY_SERVER_KEY".into(), b64u::encode(seed)));
    v
}

/// Prints the environment as `export` lines.
pub(crate) fn run(args: &ServeEnvArgs) -> anyhow::Result<()> {
    let seed: [u8; 32] = match &args.seed {
        Some(s) => b64u::decode_array(s.trim())
            .map_err(|_| anyhow::anyhow!("--seed must be b64u of 32 bytes"))?,
        None => random_seed(),
    };
    let public = public_key(&seed);
    println!(
        "# Ferry server under load test (from `ferry-load serve-env`): eval \"$(ferry-load serve-env)\""
    );
    for (name, value, why) in LOAD_LIMITS {
        println!("export {name}={value}  # {why}");
    }
    println!(
        "export FERRY_SERVER_KEY={}  # throwaway key; pin with --server-key {public}",
        b64u::encode(&seed),
    );
    println!("export FERRYLOAD_SERVER_KEY={public}");
    println!(
        "# also: export FERRY_DATA_DIR=\"$(mktemp -d)\"; for idle, ulimit -n ≥ sessions + 100"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vars_carry_the_limits_and_the_key() {
        let seed = [3u8; 32];
        let v = vars(&seed);
        assert_eq!(v.len(), LOAD_LIMITS.len() + 1);
        assert!(v.contains(&("FERRY_SERVER_KEY".into(), b64u::encode(&seed))));
        assert_eq!(public_key(&seed).len(), 43);
        assert_ne!(random_seed(), random_seed());
    }
}
