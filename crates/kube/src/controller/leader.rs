//! Leader election with a `coordination.k8s.io/v1` Lease in the controller's namespace: only
//! the holder writes status and workloads, so two replicas never fight over an Agent.
//!
//! A small loop rather than a library: get the Lease; create it when absent; renew it when
//! held; take it over when its holder has not renewed within the lease duration. Every write
//! carries the `resourceVersion` read, so two candidates racing for an expired Lease cannot
//! both win (the apiserver refuses the second with a conflict). A leader that fails to renew
//! steps down before its lease runs out, so there is never more than one writer. A leader
//! that shuts down releases the Lease (empties its holder), so a standby takes over within
//! one retry instead of a lease duration.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tokio::sync::watch;

/// The Lease's timing.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    /// The Lease's name.
    pub name: String,
    /// The namespace it lives in (the controller's).
    pub namespace: String,
    /// This candidate (pod name, or host and pid).
    pub identity: String,
    /// How long a holder's claim lasts without renewal.
    pub duration: Duration,
    /// How often the holder renews and candidates look.
    pub retry: Duration,
}

impl LeaseSettings {
    /// The defaults: Lease `warden-controller`, 15 s, renewed every 2 s.
    pub fn new(namespace: &str, identity: &str) -> Self {
        Self {
            name: "warden-controller".into(),
            namespace: namespace.into(),
            identity: identity.into(),
            duration: Duration::from_secs(15),
            retry: Duration::from_secs(2),
        }
    }
}

/// Runs for ever, publishing on `leader` whether this candidate holds the Lease.
pub async fn run(client: kube::Client, settings: LeaseSettings, leader: watch::Sender<bool>) {
    let api: Api<Lease> = Api::namespaced(client, &settings.namespace);
    let mut last_renewed: Option<tokio::time::Instant> = None;
    loop {
        let held = match try_acquire(&api, &settings).await {
            Ok(held) => {
                if held {
                    last_renewed = Some(tokio::time::Instant::now());
                }
                held
            }
            Err(e) => {
                tracing::warn!(lease = %settings.name, error = %e, "cannot read or write the Lease");
                // Keep leading only while the last renewal still stands, with a margin.
                last_renewed.is_some_and(|t| t.elapsed() < settings.duration / 2)
            }
        };
        if *leader.borrow() != held {
            tracing::info!(identity = %settings.identity, lease = %settings.name, leader = held, "leadership changed");
        }
        leader.send_replace(held);
        tokio::time::sleep(settings.retry).await;
    }
}

/// One round: true when this candidate holds the Lease afterwards.
async fn try_acquire(api: &Api<Lease>, settings: &LeaseSettings) -> Result<bool, kube::Error> {
    let now = MicroTime(Timestamp::now());
    let seconds = i32::try_from(settings.duration.as_secs()).unwrap_or(i32::MAX);
    let Some(mut lease) = api.get_opt(&settings.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(settings.name.clone()),
                namespace: Some(settings.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(settings.identity.clone()),
                lease_duration_seconds: Some(seconds),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false), // another won the race
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    let mine = spec.holder_identity.as_deref() == Some(settings.identity.as_str());
    let free = spec
        .holder_identity
        .as_deref()
        .unwrap_or_default()
        .is_empty();
    if !mine && !free && !expired(spec, &now) {
        return Ok(false);
    }
    if !mine {
        spec.holder_identity = Some(settings.identity.clone());
        spec.acquire_time = Some(now.clone());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.renew_time = Some(now);
    spec.lease_duration_seconds = Some(seconds);
    match api
        .replace(&settings.name, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Gives the Lease up if this candidate holds it (on shutdown), so that a standby need not
/// wait for it to expire.
pub async fn release(client: kube::Client, settings: &LeaseSettings) {
    let api: Api<Lease> = Api::namespaced(client, &settings.namespace);
    let Ok(Some(mut lease)) = api.get_opt(&settings.name).await else {
        return;
    };
    let Some(spec) = lease.spec.as_mut() else {
        return;
    };
    if spec.holder_identity.as_deref() != Some(settings.identity.as_str()) {
        return;
    }
    spec.holder_identity = None;
    match api
        .replace(&settings.name, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => tracing::info!(lease = %settings.name, "Lease released"),
        Err(e) => {
            tracing::warn!(lease = %settings.name, error = %e, "cannot release the Lease; it expires by itself")
        }
    }
}

fn expired(spec: &LeaseSpec, now: &MicroTime) -> bool {
    let (Some(renewed), Some(seconds)) = (&spec.renew_time, spec.lease_duration_seconds) else {
        return true;
    };
    now.0.as_second() > renewed.0.as_second() + i64::from(seconds)
}
