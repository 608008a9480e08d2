//! `streamkeeper doctor`: the server settings that matter for streams,
//! each with what it means. A finding is ok, a warning (worth fixing, the
//! work goes on: no AOF, a Sentinel master without replicas) or a failure
//! (the work cannot go on safely: a replica, a sentinel, Redis < 7, an
//! eviction policy that may drop streams, a node down). Exit 1 only on a
//! failure, so a probe is not failed for ever by a warning.

use std::collections::HashMap;

use crate::cli::Global;
use crate::output;
use crate::Exit;

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Ok,
    /// Worth fixing; not a failed check.
    Warn,
    /// A failed check: exit 1.
    Fail,
}

impl Level {
    fn unless(ok: bool, otherwise: Level) -> Level {
        if ok {
            Level::Ok
        } else {
            otherwise
        }
    }

    fn label(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Fail => "fail",
        }
    }
}

/// One finding.
struct Check {
    name: &'static str,
    /// The node checked, when the deployment has several.
    node: Option<String>,
    level: Level,
    value: String,
    meaning: String,
}

fn info_map(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

pub async fn run(global: &Global) -> anyhow::Result<Exit> {
    let redis = global.connect().await?;
    let mut bad = 0;
    let nodes = nodes(&redis).await?;
    let mut primaries = Vec::new();
    if !nodes.is_empty() {
        for node in &nodes {
            let row = probe(&redis, node).await;
            if row.role == "primary" || row.role == "master" {
                primaries.push(node.addr.clone());
            }
            if !row.ok {
                bad += 1;
            }
            print_node(global.json, &row);
        }
    }
    let mut checks = Vec::new();
    if primaries.is_empty() {
        let mut conn = redis.shared();
        checks.extend(server_checks(&redis, &mut conn, None).await?);
    } else {
        for addr in &primaries {
            // A primary that is down was reported with its node row; its
            // settings cannot be checked, which is a failed check (exit
            // 1), not a reason to drop the whole report.
            let checked = match redis.node_connection(addr).await {
                Ok(mut conn) => server_checks(&redis, &mut conn, Some(addr)).await,
                Err(e) => Err(e.into()),
            };
            match checked {
                Ok(c) => checks.extend(c),
                Err(e) => checks.push(Check {
                    name: "settings",
                    node: Some(addr.clone()),
                    level: Level::Fail,
                    value: "unknown".into(),
                    meaning: format!("could not be read: {e:#}"),
                }),
            }
        }
    }
    bad += checks.iter().filter(|c| c.level == Level::Fail).count();
    for c in &checks {
        if global.json {
            output::json_line(&serde_json::json!({
                "check": c.name, "node": c.node, "ok": c.level == Level::Ok,
                "level": c.level.label(), "value": c.value, "meaning": c.meaning
            }));
        } else {
            let status = c.level.label().to_uppercase();
            let status = if c.level == Level::Ok {
                "ok"
            } else {
                status.as_str()
            };
            match &c.node {
                Some(n) => println!(
                    "{status:4} {n:<21} {:<17} {:<28} {}",
                    c.name, c.value, c.meaning
                ),
                None => println!("{status:4} {:<17} {:<28} {}", c.name, c.value, c.meaning),
            }
        }
    }
    Ok(if bad == 0 {
        Exit::Ok
    } else {
        Exit::CheckFailed
    })
}

/// The settings that matter for streams on one data server (`node` names
/// it when the deployment has several).
async fn server_checks(
    redis: &streamkeeper::Connector,
    conn: &mut impl redis::aio::ConnectionLike,
    node: Option<&str>,
) -> anyhow::Result<Vec<Check>> {
    let info: String = redis::cmd("INFO")
        .arg("everything")
        .query_async(conn)
        .await
        .map_err(|e| streamkeeper::Error::redis("INFO", e))?;
    let info = info_map(&info);
    let get = |k: &str| info.get(k).cloned().unwrap_or_default();
    // CONFIG may be renamed or disabled on managed servers: say so.
    let policy: Option<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query_async::<Vec<String>>(conn)
        .await
        .ok()
        .and_then(|v| v.get(1).cloned());
    let version = get("redis_version");
    let major: u32 = version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    let mut checks = vec![Check {
        node: None,
        name: "version",
        level: Level::unless(major >= 7, Level::Fail),
        value: version.clone(),
        meaning: if major >= 7 {
            "XAUTOCLAIM, XINFO lag and XADD NOMKSTREAM are available (XTRIM … ACKED needs 8.2)"
                .into()
        } else {
            "older than 7.0: XAUTOCLAIM and group lag are missing; streamkeeper needs Redis 7.0 or newer".into()
        },
    }];
    let role = get("role");
    checks.push(Check {
        node: None,
        name: "role",
        level: Level::unless(role == "master", Level::Fail),
        value: role.clone(),
        meaning: if role == "master" {
            format!("writable master with {} connected replica(s)", get("connected_slaves"))
        } else {
            "a replica: writes and XREADGROUP fail with READONLY; point streamkeeper at the master (or use a Sentinel URL)".into()
        },
    });
    let aof = get("aof_enabled") == "1";
    checks.push(Check {
        node: None,
        name: "persistence",
        level: Level::unless(aof, Level::Warn),
        value: format!("aof={}", if aof { "on" } else { "off" }),
        meaning: if aof {
            "append-only file on: acknowledged entries and consumer-group state survive a restart (up to the fsync policy)".into()
        } else {
            "no AOF: a restart loses everything since the last RDB snapshot, including acks and pending lists; enable appendonly yes".into()
        },
    });
    match policy {
        Some(p) => {
            let evicts_any = p.starts_with("allkeys");
            let evicts_volatile = p.starts_with("volatile");
            checks.push(Check {
                node: None,
                name: "maxmemory-policy",
                level: Level::unless(!evicts_any, Level::Fail),
                value: format!("{p} (maxmemory {})", get("maxmemory_human")),
                meaning: if evicts_any {
                    "Redis may evict whole streams under memory pressure; use noeviction so writes fail loudly instead".into()
                } else if evicts_volatile {
                    "only keys with a TTL are evicted; streams have none, so they are safe (dedupe keys of send_once may go early)".into()
                } else {
                    "noeviction: when memory runs out writes fail with OOM instead of losing streams; run the janitor".into()
                },
            });
        }
        None => checks.push(Check {
            node: None,
            name: "maxmemory-policy",
            level: Level::Ok,
            value: "unknown (CONFIG GET is not allowed)".into(),
            meaning: "check with your provider that streams cannot be evicted".into(),
        }),
    }
    // Through a Sentinel URL the server answering is the master the
    // sentinels named: its INFO says "standalone", the setup is Sentinel.
    let through_sentinel = match redis.topology() {
        streamkeeper::Topology::Sentinel { master, sentinels } => {
            Some(format!("{master} via {} sentinel(s)", sentinels.len()))
        }
        _ => None,
    };
    let mode = if get("redis_mode") == "sentinel" {
        "sentinel".to_string()
    } else if through_sentinel.is_some() {
        "sentinel-managed master".to_string()
    } else if get("cluster_enabled") == "1" {
        "cluster".to_string()
    } else {
        "standalone".to_string()
    };
    if through_sentinel.is_some() {
        let replicas: u64 = get("connected_slaves").parse().unwrap_or(0);
        checks.push(Check {
            node: None,
            name: "replicas",
            level: Level::unless(replicas > 0, Level::Warn),
            value: replicas.to_string(),
            meaning: if replicas > 0 {
                "a failover has a replica to promote".into()
            } else {
                "Sentinel manages a master with no replica: a failover has nothing to promote, and --wait cannot be met; add a replica".into()
            },
        });
    }
    checks.push(Check {
        node: None,
        name: "mode",
        level: Level::unless(mode != "sentinel", Level::Fail),
        value: mode.clone(),
        meaning: match mode.as_str() {
            "cluster" => "Redis Cluster: each stream lives on the primary of its hash slot (shard a stream to spread it)".into(),
            "sentinel" => {
                "this is a sentinel, not a data server: use redis+sentinel://…/<master>".into()
            }
            "sentinel-managed master" => format!(
                "sentinel mode: master {} (failover is followed automatically)",
                through_sentinel.as_deref().unwrap_or("?")
            ),
            _ => "single server (use redis+sentinel:// URLs for failover)".into(),
        },
    });
    let node = node.map(str::to_string);
    for c in &mut checks {
        c.node.clone_from(&node);
    }
    Ok(checks)
}

/// A data node of a Sentinel or Cluster deployment.
struct Node {
    addr: String,
    /// What the topology says: `primary`/`replica` (cluster) or
    /// `master`/`replica` (Sentinel).
    role: &'static str,
    /// Slot ranges (cluster primaries).
    slots: Vec<String>,
    /// The primary a replica follows (cluster: its id).
    of: Option<String>,
}

/// Every node behind a Cluster or Sentinel URL; none for a single server.
async fn nodes(redis: &streamkeeper::Connector) -> anyhow::Result<Vec<Node>> {
    if let Some(nodes) = redis.cluster_nodes().await? {
        let ids: HashMap<String, String> = nodes
            .iter()
            .map(|n| (n.id.clone(), n.addr.clone()))
            .collect();
        let mut out: Vec<Node> = nodes
            .into_iter()
            .map(|n| Node {
                role: if n.primary { "primary" } else { "replica" },
                of: n
                    .primary_id
                    .as_ref()
                    .map(|id| ids.get(id).cloned().unwrap_or_else(|| id.clone())),
                slots: n.slots,
                addr: n.addr,
            })
            .collect();
        out.sort_by(|a, b| (a.role, &a.addr).cmp(&(b.role, &b.addr)));
        return Ok(out);
    }
    if let streamkeeper::Topology::Sentinel { .. } = redis.topology() {
        let master = redis.server_addr();
        let mut conn = redis.shared();
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut conn)
            .await
            .map_err(|e| streamkeeper::Error::redis("INFO replication", e))?;
        let mut out = vec![Node {
            addr: master.clone(),
            role: "master",
            slots: Vec::new(),
            of: None,
        }];
        for line in info.lines().filter(|l| l.starts_with("slave")) {
            let Some((_, fields)) = line.split_once(':') else {
                continue;
            };
            let field = |name: &str| {
                fields
                    .split(',')
                    .find_map(|kv| kv.trim().strip_prefix(name)?.strip_prefix('='))
            };
            if let (Some(ip), Some(port)) = (field("ip"), field("port")) {
                out.push(Node {
                    addr: format!("{ip}:{port}"),
                    role: "replica",
                    slots: Vec::new(),
                    of: Some(master.clone()),
                });
            }
        }
        return Ok(out);
    }
    Ok(Vec::new())
}

/// What one node reports and how far it is from here.
struct NodeRow<'a> {
    node: &'a Node,
    role: &'a str,
    ok: bool,
    link: String,
    rtt_us: Option<u64>,
}

/// Connects to `node`, times five PINGs (the median is its round trip
/// from here) and reads its replication state.
async fn probe<'a>(redis: &streamkeeper::Connector, node: &'a Node) -> NodeRow<'a> {
    let down = |why: String| NodeRow {
        node,
        role: node.role,
        ok: false,
        link: why,
        rtt_us: None,
    };
    let mut conn = match redis.node_connection(&node.addr).await {
        Ok(c) => c,
        Err(e) => return down(format!("unreachable: {e}")),
    };
    let mut rtts = Vec::new();
    for _ in 0..5 {
        let t = std::time::Instant::now();
        if redis::cmd("PING")
            .query_async::<()>(&mut conn)
            .await
            .is_err()
        {
            return down("does not answer PING".into());
        }
        rtts.push(u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX));
    }
    rtts.sort_unstable();
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query_async(&mut conn)
        .await
        .unwrap_or_default();
    let info = info_map(&info);
    let (ok, link) = if info.get("role").map(String::as_str) == Some("slave") {
        let up = info.get("master_link_status").map(String::as_str) == Some("up");
        (
            up,
            format!(
                "link {} to {}",
                if up { "up" } else { "DOWN" },
                node.of.as_deref().unwrap_or("?")
            ),
        )
    } else {
        let replicas = info
            .get("connected_slaves")
            .cloned()
            .unwrap_or_else(|| "?".into());
        (true, format!("{replicas} replica(s) connected"))
    };
    NodeRow {
        node,
        role: node.role,
        ok,
        link,
        rtt_us: rtts.get(rtts.len() / 2).copied(),
    }
}

fn print_node(json: bool, row: &NodeRow<'_>) {
    if json {
        output::json_line(&serde_json::json!({
            "node": row.node.addr,
            "role": row.role,
            "slots": row.node.slots,
            "replica_of": row.node.of,
            "link": row.link,
            "ok": row.ok,
            "rtt_us": row.rtt_us,
        }));
    } else {
        let rtt = row.rtt_us.map_or_else(
            || "-".to_string(),
            |us| format!("{:.2} ms", us as f64 / 1000.0),
        );
        let slots = if row.node.slots.is_empty() {
            "-".to_string()
        } else {
            row.node.slots.join(",")
        };
        println!(
            "{:4} node {:<21} {:<8} slots {:<12} rtt {:<9} {}",
            if row.ok { "ok" } else { "WARN" },
            row.node.addr,
            row.role,
            slots,
            rtt,
            row.link
        );
    }
}
