//! Following a Sentinel-managed master: resolving it through the
//! sentinels, checking `ROLE`, listening for `+switch-master` (and the
//! start of a failover) on every sentinel, and releasing held writes once
//! the new master has a replica in sync.

use std::sync::Weak;
use std::time::Duration;

use futures::StreamExt;
use redis::{AsyncConnectionConfig, IntoConnectionInfo};

use super::backoff::Backoff;
use super::connector::{Connector, Inner};
use super::options::{ConnectorOptions, FAILOVER_PAUSE_MAX};
use super::url::Topology;
use crate::error::{Error, Result};
use crate::redact::redact;
use crate::replica_hold::replica_in_sync;

/// Asks every sentinel (at once) for the master's address and takes the
/// answer with the highest config epoch. Right after a failover only the
/// leader knows the new master; the others learn it within seconds and
/// name the deposed one meanwhile, which still says `role:master` until
/// it is turned into a replica: taking the first answer would move a
/// connector that already followed the switch back to it, and what it
/// acknowledges there is erased. Returns a client for the master and its
/// `host:port`.
pub(super) async fn resolve_master(
    sentinels: &[String],
    master: &str,
    userinfo: Option<&str>,
    sentinel_auth: Option<&(Option<String>, String)>,
    options: &ConnectorOptions,
) -> Result<(redis::Client, String)> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(options.connect_timeout))
        .set_response_timeout(Some(options.connect_timeout));
    let asks = sentinels
        .iter()
        .map(|sentinel| ask_sentinel(sentinel, master, sentinel_auth, &config));
    let answers = futures::future::join_all(asks).await;
    let mut best: Option<(u64, String)> = None;
    let mut last_error = String::from("no sentinel answered");
    for answer in answers {
        match answer {
            Ok((epoch, addr)) => {
                if best.as_ref().is_none_or(|(e, _)| epoch > *e) {
                    best = Some((epoch, addr));
                }
            }
            Err(e) => last_error = e,
        }
    }
    match best {
        Some((_, addr)) => Ok((master_client(&addr, userinfo)?, addr)),
        None => Err(Error::NoMaster {
            master: master.to_string(),
            cause: last_error,
        }),
    }
}

/// One sentinel's view of `master`: its config epoch and `host:port`
/// (`SENTINEL MASTER`; a sentinel that refuses it is asked
/// `get-master-addr-by-name`, epoch 0). The error is a line naming the
/// sentinel.
async fn ask_sentinel(
    sentinel: &str,
    master: &str,
    sentinel_auth: Option<&(Option<String>, String)>,
    config: &AsyncConnectionConfig,
) -> std::result::Result<(u64, String), String> {
    let client =
        sentinel_client(sentinel, sentinel_auth).map_err(|e| format!("{sentinel}: {e}"))?;
    let mut conn = client
        .get_multiplexed_async_connection_with_config(config)
        .await
        .map_err(|e| format!("sentinel {sentinel}: {e}"))?;
    let view: redis::RedisResult<std::collections::HashMap<String, String>> =
        redis::cmd("SENTINEL")
            .arg("MASTER")
            .arg(master)
            .query_async(&mut conn)
            .await;
    if let Ok(view) = view {
        if let (Some(ip), Some(port)) = (view.get("ip"), view.get("port")) {
            let epoch = view
                .get("config-epoch")
                .and_then(|e| e.parse().ok())
                .unwrap_or(0);
            return Ok((epoch, format!("{ip}:{port}")));
        }
    }
    let answer: redis::RedisResult<Option<(String, u16)>> = redis::cmd("SENTINEL")
        .arg("get-master-addr-by-name")
        .arg(master)
        .query_async(&mut conn)
        .await;
    match answer {
        Ok(Some((host, port))) => Ok((0, format!("{host}:{port}"))),
        Ok(None) => Err(format!(
            "sentinel {sentinel} does not know a master named {master:?}"
        )),
        Err(e) => Err(format!("sentinel {sentinel}: {e}")),
    }
}

/// A client for the master at `addr` with the URL's credentials.
pub(super) fn master_client(addr: &str, userinfo: Option<&str>) -> Result<redis::Client> {
    let url = match userinfo {
        Some(u) => format!("redis://{u}@{addr}"),
        None => format!("redis://{addr}"),
    };
    redis::Client::open(url).map_err(|e| Error::InvalidUrl {
        url: redact(addr),
        reason: e.to_string(),
    })
}

/// A client for one sentinel, with the sentinels' own credentials.
pub(super) fn sentinel_client(
    addr: &str,
    auth: Option<&(Option<String>, String)>,
) -> redis::RedisResult<redis::Client> {
    let info = format!("redis://{addr}").into_connection_info()?;
    let info = match auth {
        Some((user, pass)) => {
            let mut settings = info.redis_settings().clone().set_password(pass);
            if let Some(u) = user {
                settings = settings.set_username(u);
            }
            info.set_redis_settings(settings)
        }
        None => info,
    };
    redis::Client::open(info)
}

/// After the switch numbered `switch`: polls the new master's
/// `INFO replication` until a replica is in sync, then releases held
/// writes; after `max`, releases them anyway with a warning. Ends early
/// if the connector switched again (that switch runs its own).
pub(super) async fn release_when_replicated(inner: Weak<Inner>, switch: u64, max: Duration) {
    let started = tokio::time::Instant::now();
    let mut said = false;
    loop {
        let Some(connector) = inner.upgrade().map(|inner| Connector { inner }) else {
            return;
        };
        if *connector.inner.switches.borrow() != switch {
            return;
        }
        let mut conn = connector.shared();
        let info: redis::RedisResult<String> = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut conn)
            .await;
        if info.as_deref().is_ok_and(replica_in_sync) {
            if said {
                tracing::info!(master = %connector.server_addr(), waited = ?started.elapsed(),
                    "a replica of the new master is in sync: writes go on");
            }
            connector.inner.hold.release();
            return;
        }
        if started.elapsed() >= max {
            tracing::warn!(master = %connector.server_addr(),
                "the new master still has no replica in sync: writing anyway; writes acknowledged now are lost if it fails over before one syncs (use WAIT / produce --wait to be sure)");
            connector.inner.hold.release();
            return;
        }
        if !said {
            tracing::warn!(master = %connector.server_addr(), ?max,
                "holding writes until a replica of the new master is in sync");
            said = true;
        }
        drop(connector);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Subscribes to `channel` on one sentinel, within `connect_timeout`.
pub(super) async fn subscribe(
    sentinel: &str,
    auth: Option<&(Option<String>, String)>,
    connect_timeout: Duration,
    channel: &str,
) -> redis::RedisResult<redis::aio::PubSub> {
    let client = sentinel_client(sentinel, auth)?;
    let mut pubsub = tokio::time::timeout(connect_timeout, client.get_async_pubsub())
        .await
        .map_err(|_| {
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut))
        })??;
    pubsub.subscribe(channel).await?;
    Ok(pubsub)
}

/// Listens on one sentinel for the start of a failover of our master
/// (`+failover-state-send-slaveof-noone`: the leader is promoting a
/// replica) and holds writes from then on: the master in use is about to
/// be deposed, and what it acknowledges from now until the switch would
/// be erased. The switch releases them (or, with the opt-in
/// `replica_hold`, keeps them until the new master has a replica in sync);
/// a failover that never switches (aborted) releases them after
/// [`FAILOVER_PAUSE_MAX`]. Only the leading sentinel publishes that event,
/// hence one watcher per sentinel.
pub(super) async fn failover_start_watch(inner: Weak<Inner>, sentinel: String) {
    const STARTED: &str = "+failover-state-send-slaveof-noone";
    let mut backoff = Backoff::default();
    loop {
        let Some(connector) = inner.upgrade().map(|inner| Connector { inner }) else {
            return;
        };
        let Topology::Sentinel { master, .. } = connector.inner.topology.clone() else {
            return;
        };
        let auth = connector.inner.sentinel_auth.clone();
        let connect_timeout = connector.inner.options.connect_timeout;
        drop(connector);
        let subscribed = subscribe(&sentinel, auth.as_ref(), connect_timeout, STARTED).await;
        let mut pubsub = match subscribed {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(%sentinel, error = %e, "cannot watch this sentinel for failovers");
                tokio::time::sleep(backoff.next()).await;
                continue;
            }
        };
        backoff.reset();
        let mut messages = pubsub.on_message();
        while let Some(msg) = messages.next().await {
            let Ok(payload) = msg.get_payload::<String>() else {
                continue;
            };
            // "slave <name> <ip> <port> @ <master-name> <ip> <port>"
            let mut at = payload.split(" @ ");
            let ours = at
                .nth(1)
                .and_then(|m| m.split(' ').next())
                .is_some_and(|name| name == master);
            if !ours {
                continue;
            }
            let Some(connector) = inner.upgrade().map(|inner| Connector { inner }) else {
                return;
            };
            let max = FAILOVER_PAUSE_MAX;
            tracing::warn!(%sentinel, "a failover started: holding writes until the new master is followed");
            connector.inner.hold.hold();
            let switch = *connector.inner.switches.borrow();
            let weak = inner.clone();
            tokio::spawn(async move {
                tokio::time::sleep(max).await;
                if let Some(inner) = weak.upgrade() {
                    // Still no switch: the failover was aborted.
                    if *inner.switches.borrow() == switch && inner.hold.is_held() {
                        tracing::warn!("no new master after the failover started: writes go on");
                        inner.hold.release();
                    }
                }
            });
        }
        tracing::debug!(%sentinel, "lost the failover watch; resubscribing");
    }
}

/// Listens for `+switch-master` on the sentinels (one at a time, moving
/// on when one goes away) and moves the connector as soon as its master
/// is announced elsewhere. After each (re)subscription it re-resolves, in
/// case an announcement was missed while no sentinel was listened to.
pub(super) async fn switch_listener(inner: Weak<Inner>) {
    let mut backoff = Backoff::default();
    let mut next = 0usize;
    loop {
        let Some(connector) = inner.upgrade().map(|inner| Connector { inner }) else {
            return;
        };
        let Topology::Sentinel { sentinels, master } = connector.inner.topology.clone() else {
            return;
        };
        let sentinel = sentinels[next % sentinels.len()].clone();
        next += 1;
        let auth = connector.inner.sentinel_auth.clone();
        let connect_timeout = connector.inner.options.connect_timeout;
        drop(connector);
        let subscribed =
            subscribe(&sentinel, auth.as_ref(), connect_timeout, "+switch-master").await;
        let mut pubsub = match subscribed {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(%sentinel, error = %e, "cannot listen to this sentinel; trying the next");
                tokio::time::sleep(backoff.next()).await;
                continue;
            }
        };
        backoff.reset();
        if let Some(inner) = inner.upgrade() {
            let _ = Connector { inner }.recover().await;
        }
        let mut messages = pubsub.on_message();
        while let Some(msg) = messages.next().await {
            let Ok(payload) = msg.get_payload::<String>() else {
                continue;
            };
            // "<master-name> <old-ip> <old-port> <new-ip> <new-port>"
            let parts: Vec<&str> = payload.split(' ').collect();
            if parts.len() != 5 || parts[0] != master {
                continue;
            }
            let addr = format!("{}:{}", parts[3], parts[4]);
            let Some(connector) = inner.upgrade().map(|inner| Connector { inner }) else {
                return;
            };
            tracing::info!(%sentinel, %addr, "sentinel announced a new master");
            // The new master may need a moment to report role master.
            for _ in 0..20 {
                match connector.follow_announcement(&master, &addr).await {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot switch to the announced master yet");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
        tracing::debug!(%sentinel, "lost the sentinel subscription; resubscribing");
    }
}

/// Fails unless the server behind `conn` says it is a master (during a
/// failover a sentinel may still name the demoted one).
pub(super) async fn check_master_role(
    conn: &mut impl redis::aio::ConnectionLike,
    master: &str,
) -> Result<()> {
    let role: redis::Value = redis::cmd("ROLE")
        .query_async(conn)
        .await
        .map_err(|e| Error::redis("ROLE", e))?;
    let first = match &role {
        redis::Value::Array(items) => items.first().map(crate::reply::text),
        _ => None,
    };
    if first.as_deref() == Some("master") {
        Ok(())
    } else {
        Err(Error::NoMaster {
            master: master.to_string(),
            cause: format!(
                "the server the sentinels named reports role {first:?}; a failover is in progress"
            ),
        })
    }
}
