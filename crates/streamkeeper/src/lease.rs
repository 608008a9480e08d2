//! Leases: one worker at a time on a key (`SET … PX`, renewed), in two
//! kinds. A plain lease (the janitor of a stream, the retry mover, the
//! dashboard's history writer) is held under the holder's name; a fenced
//! one (ordered mode's shard owners) under a token `<holder>:<epoch>`
//! whose epoch grows with every new owner, so a zombie's token stops
//! working. Both are renewed and released by the same script, only while
//! the key still holds the value its holder set (a [`Fence`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::conn::Connector;
use crate::error::{Error, Result};
use crate::scripts;

/// A lease this process holds: the key and the value it set there. The
/// fenced settling scripts refuse to write unless the key still holds
/// `token` (see `ConsumerOptions::fence`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The lease key (in the stream's slot).
    pub key: String,
    /// The value this owner set in it.
    pub token: String,
}

impl Fence {
    /// Renews the lease for `ttl` if it still holds our token; `false`
    /// when it does not (it ran out, or someone else took it).
    pub async fn renew(&self, connector: &Connector, ttl: Duration) -> Result<bool> {
        keep(connector, self, ms(ttl)).await
    }

    /// Gives the lease up if it still holds our token; `false` when it
    /// did not.
    pub async fn release(&self, connector: &Connector) -> Result<bool> {
        keep(connector, self, 0).await
    }

    /// The error a fenced script's refusal stands for: the fence prelude
    /// (`lua/fence.lua`) replies `SKFENCED … (<lease key>)` when the lease
    /// no longer holds the token. `None` for any other error.
    pub(crate) fn refusal(e: &redis::RedisError) -> Option<Error> {
        if crate::error::error_code(e).as_deref() != Some("SKFENCED") {
            return None;
        }
        let text = crate::error::redis_text(e);
        let lease = text
            .rsplit_once('(')
            .and_then(|(_, k)| k.strip_suffix(')'))
            .unwrap_or_default()
            .to_string();
        Some(Error::Fenced { lease })
    }

    /// Whether the lease still holds our token (true when asking fails:
    /// the fenced scripts refuse a zombie's writes anyway).
    pub async fn still_held(&self, connector: &Connector) -> bool {
        let mut conn = connector.shared();
        let now: redis::RedisResult<Option<String>> = redis::cmd("GET")
            .arg(&self.key)
            .query_async(&mut conn)
            .await;
        match now {
            Ok(holder) => holder.as_deref() == Some(self.token.as_str()),
            Err(_) => true,
        }
    }
}

/// Which kind of lease, and what it needs.
#[derive(Debug, Clone)]
enum Kind {
    /// Held under the holder's name; renewed by taking it again. A user
    /// not granted the key works without it (said once).
    Plain { unleased: Arc<AtomicBool> },
    /// Held under `<holder>:<epoch>`, the epoch counter at this key.
    Fenced { epoch: String },
}

/// A lease on `key` for `holder`, valid `ttl` after each renewal.
#[derive(Debug, Clone)]
pub struct Lease {
    connector: Connector,
    key: String,
    holder: String,
    ttl: Duration,
    kind: Kind,
}

impl Lease {
    /// A plain lease: [`acquire`](Self::acquire) takes it when free and
    /// renews it when ours.
    pub fn plain(
        connector: &Connector,
        key: impl Into<String>,
        holder: impl Into<String>,
        ttl: Duration,
    ) -> Self {
        Lease {
            connector: connector.clone(),
            key: key.into(),
            holder: holder.into(),
            ttl,
            kind: Kind::Plain {
                unleased: Arc::default(),
            },
        }
    }

    /// A fenced lease: [`take`](Self::take) gives a new token, from the
    /// counter at `epoch`, each time it is taken; renew it through the
    /// [`Fence`].
    pub fn fenced(
        connector: &Connector,
        key: impl Into<String>,
        epoch: impl Into<String>,
        holder: impl Into<String>,
        ttl: Duration,
    ) -> Self {
        Lease {
            connector: connector.clone(),
            key: key.into(),
            holder: holder.into(),
            ttl,
            kind: Kind::Fenced {
                epoch: epoch.into(),
            },
        }
    }

    /// The lease key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Takes the lease. Plain: when free or already ours (then renewed).
    /// Fenced: only when nobody holds it, not even an earlier process of
    /// the same name (its token must stop working). `None` while another
    /// holds it.
    pub async fn take(&self) -> Result<Option<Fence>> {
        let mut conn = self.connector.shared();
        match &self.kind {
            Kind::Plain { unleased } => {
                let r = TakePlain {
                    key: &self.key,
                    holder: &self.holder,
                    ttl_ms: ms(self.ttl).max(1),
                }
                .invoke(&mut conn)
                .await;
                match r {
                    Ok(taken) => Ok(taken.then(|| self.own())),
                    // A user granted only stream commands may not write
                    // the lease key: the work goes on without it (docs/design.md
                    // §6). What a plain lease guards is safe to run twice
                    // at once (one atomic script per step); the lease only
                    // saves the work.
                    Err(e) if crate::error::is_noperm(&e) => {
                        if !unleased.swap(true, Ordering::Relaxed) {
                            tracing::warn!(key = %self.key, "this user may not write the lease key; working without it");
                        }
                        Ok(Some(self.own()))
                    }
                    Err(e) => Err(Error::redis(format!("taking the lease {}", self.key), e)),
                }
            }
            Kind::Fenced { epoch } => TakeFenced {
                key: &self.key,
                epoch,
                holder: &self.holder,
                ttl_ms: ms(self.ttl).max(1),
            }
            .invoke(&mut conn)
            .await
            .map(|token| {
                token.map(|token| Fence {
                    key: self.key.clone(),
                    token,
                })
            })
            .map_err(|e| Error::redis(format!("taking the lease {}", self.key), e)),
        }
    }

    /// A plain lease: takes it if free, renews it if ours; `false` if
    /// another holds it. A user not granted the lease key's commands gets
    /// `true` and a warning once: the work is not refused.
    pub async fn acquire(&self) -> Result<bool> {
        self.take().await.map(|f| f.is_some())
    }

    /// A plain lease: gives it up if we hold it.
    pub async fn release(&self) -> Result<()> {
        match keep(&self.connector, &self.own(), 0).await {
            Ok(_) => Ok(()),
            Err(Error::Redis { source, .. }) if crate::error::is_noperm(&source) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The fence of a plain lease: its value is the holder's name.
    fn own(&self) -> Fence {
        Fence {
            key: self.key.clone(),
            token: self.holder.clone(),
        }
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Renews (`ttl_ms` > 0) or releases (0) the lease if it still holds the
/// fence's token.
async fn keep(connector: &Connector, fence: &Fence, ttl_ms: u64) -> Result<bool> {
    let mut conn = connector.shared();
    Keep {
        key: &fence.key,
        token: &fence.token,
        ttl_ms,
    }
    .invoke(&mut conn)
    .await
    .map_err(|e| Error::redis(format!("keeping the lease {}", fence.key), e))
}

/// `lua/lease.lua`: take a plain lease when free or ours.
struct TakePlain<'a> {
    key: &'a str,
    holder: &'a str,
    ttl_ms: u64,
}

impl TakePlain<'_> {
    /// True when we hold the lease now.
    async fn invoke<C: redis::aio::ConnectionLike + Send>(
        &self,
        conn: &mut C,
    ) -> redis::RedisResult<bool> {
        let held: i64 = scripts::LEASE
            .key(self.key)
            .arg(self.holder)
            .arg(self.ttl_ms)
            .invoke_async(conn)
            .await?;
        Ok(held == 1)
    }
}

/// `lua/lease_acquire.lua`: take a fenced lease with a new token.
struct TakeFenced<'a> {
    key: &'a str,
    epoch: &'a str,
    holder: &'a str,
    ttl_ms: u64,
}

impl TakeFenced<'_> {
    /// The new token, or `None` while anyone holds the lease.
    async fn invoke<C: redis::aio::ConnectionLike + Send>(
        &self,
        conn: &mut C,
    ) -> redis::RedisResult<Option<String>> {
        scripts::LEASE_ACQUIRE
            .key(self.key)
            .key(self.epoch)
            .arg(self.holder)
            .arg(self.ttl_ms)
            .invoke_async(conn)
            .await
    }
}

/// `lua/lease_keep.lua`: renew or release a lease that holds `token`.
struct Keep<'a> {
    key: &'a str,
    token: &'a str,
    ttl_ms: u64,
}

impl Keep<'_> {
    /// Whether the lease held the token.
    async fn invoke<C: redis::aio::ConnectionLike + Send>(
        &self,
        conn: &mut C,
    ) -> redis::RedisResult<bool> {
        let kept: i64 = scripts::LEASE_KEEP
            .key(self.key)
            .arg(self.token)
            .arg(self.ttl_ms)
            .invoke_async(conn)
            .await?;
        Ok(kept == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_error(text: &str) -> redis::RedisError {
        let mut bytes = b"-".to_vec();
        bytes.extend_from_slice(text.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        match redis::parse_redis_value(&bytes) {
            Ok(redis::Value::ServerError(e)) => e.into(),
            other => panic!("expected a server error, got {other:?}"),
        }
    }

    #[test]
    fn a_fence_refusal_is_the_fenced_error_naming_the_lease() {
        let fenced = Fence::refusal(&server_error(
            "SKFENCED this consumer no longer owns the shard ({s:0}:owner:g)",
        ))
        .expect("a fence refusal");
        assert!(matches!(&fenced, Error::Fenced { lease } if lease == "{s:0}:owner:g"));
        assert!(!fenced.is_retryable());
        assert!(Fence::refusal(&server_error("READONLY You can't write")).is_none());
    }
}
