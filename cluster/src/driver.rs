//! The background task of a [`ClusterStore`](crate::ClusterStore): one loop of *sessions*.
//! A session makes sure the gateway lease exists (renewing the previous one when etcd still
//! has it, granting a new one otherwise), checks the schema, reads the snapshot of the prefix
//! into the cache, and follows a prefix watch from the snapshot's revision + 1 while renewing
//! the lease every third of its TTL. A compacted or cancelled watch re-reads the snapshot
//! (still up); any error ends the session: the store goes down, the cache keeps answering,
//! and the next session starts after a short backoff (250 ms doubling to 2 s).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use etcd_client::{
    Compare, CompareOp, EventType, GetOptions, LeaseKeepAliveStream, LeaseKeeper, Txn, TxnOp,
    TxnOpResponse, WatchOptions, WatchResponse,
};
use tokio::sync::oneshot;

use crate::cache::{Update, decode};
use crate::error::ClusterError;
use crate::keys::SCHEMA;
use crate::store::Shared;

const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Runs sessions until the store is dropped; the first session's outcome goes to `first`.
pub(crate) async fn run(shared: Arc<Shared>, first: oneshot::Sender<Result<(), ClusterError>>) {
    let mut first = Some(first);
    let mut backoff = BACKOFF_MIN;
    loop {
        let err = session(&shared, &mut first, &mut backoff).await;
        shared.set_down(err.clone());
        if let Some(first) = first.take() {
            let fatal = !err.is_transient();
            let _ = first.send(Err(err));
            if fatal {
                return;
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One session; returns why it ended.
async fn session(
    shared: &Shared,
    first: &mut Option<oneshot::Sender<Result<(), ClusterError>>>,
    backoff: &mut Duration,
) -> ClusterError {
    let lease = match ensure_lease(shared).await {
        Ok(lease) => lease,
        Err(err) => return err,
    };
    if let Err(err) = check_schema(shared).await {
        return err;
    }
    let mut client = shared.client.clone();
    let (mut keeper, mut renewals) = match shared
        .call("lease keep-alive", client.lease_keep_alive(lease))
        .await
    {
        Ok(pair) => pair,
        Err(err) => return err,
    };
    loop {
        let revision = match snapshot(shared).await {
            Ok(revision) => revision,
            Err(err) => return err,
        };
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision + 1);
        let root = shared.keys.root().to_owned();
        let mut watch = match shared
            .call("watch", client.watch(root, Some(options)))
            .await
        {
            Ok(watch) => watch,
            Err(err) => return err,
        };
        shared.set_up();
        *backoff = BACKOFF_MIN;
        if let Some(first) = first.take() {
            let _ = first.send(Ok(()));
        }
        let mut renew = tokio::time::interval(shared.options.lease_ttl / 3);
        renew.tick().await;
        loop {
            tokio::select! {
                _ = renew.tick() => {
                    if let Err(err) = renew_lease(shared, &mut keeper, &mut renewals).await {
                        return err;
                    }
                }
                message = watch.message() => match message {
                    Ok(Some(response)) => {
                        if response.canceled() || response.compact_revision() > 0 {
                            tracing::info!(
                                compacted = response.compact_revision(),
                                reason = response.cancel_reason(),
                                "cluster watch cancelled; reading the snapshot again"
                            );
                            break;
                        }
                        apply_watch(shared, response).await;
                    }
                    Ok(None) => return unreachable(shared, "the watch stream ended"),
                    Err(e) => return ClusterError::from_etcd(&shared.endpoints, &e),
                },
            }
        }
    }
}

/// Renews the lease the store had if etcd still knows it, or grants a new one.
async fn ensure_lease(shared: &Shared) -> Result<i64, ClusterError> {
    let mut client = shared.client.clone();
    let old = shared.lease.load(Ordering::Relaxed);
    if old != 0 {
        let alive = shared
            .call("lease time-to-live", client.lease_time_to_live(old, None))
            .await?;
        if alive.ttl() > 0 {
            return Ok(old);
        }
        tracing::info!(
            lease = old,
            "the gateway lease expired while etcd was away; granting a new one"
        );
    }
    let ttl = i64::try_from(shared.options.lease_ttl.as_secs().max(1)).unwrap_or(10);
    let granted = shared
        .call("lease grant", client.lease_grant(ttl, None))
        .await?;
    shared.lease.store(granted.id(), Ordering::Relaxed);
    Ok(granted.id())
}

/// Writes `schema = 1` if no gateway did yet; refuses a newer schema.
async fn check_schema(shared: &Shared) -> Result<(), ClusterError> {
    let key = shared.keys.schema();
    let txn = Txn::new()
        .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(key.as_str(), SCHEMA.to_string(), None)])
        .or_else([TxnOp::get(key.as_str(), None)]);
    let mut client = shared.client.clone();
    let answer = shared.call("schema", client.txn(txn)).await?;
    if answer.succeeded() {
        return Ok(());
    }
    let found = match answer.op_responses().into_iter().next() {
        Some(TxnOpResponse::Get(get)) => get
            .kvs()
            .first()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
            .unwrap_or_default(),
        _ => String::new(),
    };
    match found.trim().parse::<u32>() {
        Ok(version) if version <= SCHEMA => Ok(()),
        Ok(_) => Err(ClusterError::SchemaTooNew {
            endpoints: shared.endpoints.clone(),
            found,
        }),
        Err(e) => Err(ClusterError::BadValue {
            key,
            reason: format!("schema {found:?}: {e}"),
        }),
    }
}

/// Reads every key under the prefix into the cache; the revision it was read at.
async fn snapshot(shared: &Shared) -> Result<i64, ClusterError> {
    let mut client = shared.client.clone();
    let root = shared.keys.root().to_owned();
    let answer = shared
        .call(
            "snapshot",
            client.get(root, Some(GetOptions::new().with_prefix())),
        )
        .await?;
    let revision = answer.header().map_or(0, |h| h.revision());
    let updates = answer
        .kvs()
        .iter()
        .filter_map(|kv| readable(shared, kv.key(), kv.value(), kv.mod_revision(), false))
        .collect();
    let changed = shared.cache().replace(updates, revision);
    shared.changed(changed).await;
    Ok(revision)
}

/// Applies one watch response to the cache.
async fn apply_watch(shared: &Shared, response: WatchResponse) {
    // Only the events say how far the cache has come: the header of the response that
    // creates the watch carries the store's revision, and events up to it may still follow.
    let mut revision = 0;
    let mut updates = Vec::with_capacity(response.events().len());
    for event in response.events() {
        let Some(kv) = event.kv() else { continue };
        let deleted = event.event_type() == EventType::Delete;
        revision = revision.max(kv.mod_revision());
        updates.extend(readable(
            shared,
            kv.key(),
            kv.value(),
            kv.mod_revision(),
            deleted,
        ));
    }
    let changed = shared.cache().apply_watch(updates, revision);
    shared.changed(changed).await;
}

/// Sends one renewal and waits for its answer; a lease etcd no longer has ends the session.
async fn renew_lease(
    shared: &Shared,
    keeper: &mut LeaseKeeper,
    renewals: &mut LeaseKeepAliveStream,
) -> Result<(), ClusterError> {
    shared.call("lease keep-alive", keeper.keep_alive()).await?;
    match shared.call("lease keep-alive", renewals.message()).await? {
        Some(answer) if answer.ttl() > 0 => Ok(()),
        Some(_) => {
            shared.lease.store(0, Ordering::Relaxed);
            Err(unreachable(shared, "the gateway lease expired"))
        }
        None => Err(unreachable(shared, "the lease keep-alive stream ended")),
    }
}

/// Decodes one key/value, logging (not failing on) a value this gateway cannot read.
fn readable(shared: &Shared, key: &[u8], value: &[u8], rev: i64, deleted: bool) -> Option<Update> {
    match decode(&shared.keys, key, value, rev, deleted) {
        Ok(update) => update,
        Err(reason) => {
            let err = ClusterError::BadValue {
                key: String::from_utf8_lossy(key).into_owned(),
                reason,
            };
            tracing::warn!("{err}; ignoring it");
            None
        }
    }
}

fn unreachable(shared: &Shared, detail: &str) -> ClusterError {
    ClusterError::Unreachable {
        endpoints: shared.endpoints.clone(),
        detail: detail.to_owned(),
    }
}
