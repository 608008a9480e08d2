//! [`Member`]: who consumes which sharded stream, and how — what the
//! shared and ordered runners take from [`ShardedConsumer`](super::ShardedConsumer).

use super::layout::ShardLayout;
use crate::conn::Connector;
use crate::consumer::ConsumerOptions;
use crate::types::{ConsumerName, GroupName};

/// A member of a group on a sharded stream, as the modes' runners take it.
pub(crate) struct Member {
    pub(crate) redis: Connector,
    pub(crate) layout: ShardLayout,
    pub(crate) group: GroupName,
    pub(crate) name: ConsumerName,
    pub(crate) options: ConsumerOptions,
}
