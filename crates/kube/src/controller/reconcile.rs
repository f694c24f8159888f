//! One pass over every Agent: fetch the cards that need it, then write each status and
//! workload template that differs from the desired one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use warden_model::resources::{AgentStatus, TargetRef, WorkloadKind};
use warden_model::{Agent, CompiledAgent};

use super::admin::{ControllerMetrics, FetchLabels, WriteLabels};
use super::card::{self, CardFetcher, CardTarget, Transport};
use super::status::{
    AgentFacts, AgentModel, CardOutcome, CardProblem, MTLS_READY, SPIRE_UNAVAILABLE, SpireStatus,
    desired_status,
};
use super::{ClusterStores, ControllerConfig, rollout, spire::SpireDetector};
use crate::validate::located;
use crate::watch::MeshState;

/// The field manager of the controller's writes.
const MANAGER: &str = "warden-controller";

/// What a card fetch depended on: when any of it changes, the card is fetched again.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CardKey {
    target: CardTarget,
    transport: Transport,
    spiffe_id: String,
}

struct CachedCard {
    key: CardKey,
    outcome: CardOutcome,
    at: Instant,
}

pub(super) struct Reconciler {
    client: kube::Client,
    agents: ApiResource,
    agent_objects: Store<DynamicObject>,
    recorder: Recorder,
    stores: ClusterStores,
    detector: Arc<SpireDetector>,
    fetcher: CardFetcher,
    verified_fetch: bool,
    retry: Duration,
    cards: HashMap<(String, String), CachedCard>,
    metrics: Arc<ControllerMetrics>,
}

impl Reconciler {
    pub(super) fn new(
        client: kube::Client,
        config: &ControllerConfig,
        agent_objects: Store<DynamicObject>,
        stores: ClusterStores,
        detector: Arc<SpireDetector>,
        metrics: Arc<ControllerMetrics>,
    ) -> Self {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance: Some(config.identity.clone()),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            agents: ApiResource::erase::<Agent>(&()),
            agent_objects,
            stores,
            fetcher: CardFetcher::new(detector.identity(), config.verified_fetch),
            detector,
            verified_fetch: config.verified_fetch,
            retry: config.resync,
            cards: HashMap::new(),
            metrics,
        }
    }

    pub(super) async fn wait_until_ready(&self) {
        let _ = tokio::join!(
            self.stores.slices.wait_until_ready(),
            self.stores.deployments.wait_until_ready(),
            self.stores.stateful_sets.wait_until_ready(),
        );
    }

    /// One pass over every Agent of the cache.
    pub(super) async fn pass(&mut self, state: &MeshState) {
        let started = Instant::now();
        if self.detector.identity().is_some() && !self.fetcher.has_mesh() {
            // The Workload API came up: fetch over mTLS from now on.
            self.fetcher = CardFetcher::new(self.detector.identity(), self.verified_fetch);
        }
        let spire = self.detector.status();
        self.metrics.spire_available.set(i64::from(spire.available));
        self.metrics
            .mesh_errors
            .set(i64::try_from(state.errors.len()).unwrap_or(i64::MAX));
        if let Some(snapshot) = &state.snapshot {
            self.fetch_cards(snapshot.agents()).await;
        }
        for object in self.agent_objects.state() {
            self.reconcile_agent(&object, state, &spire).await;
        }
        self.metrics.reconciles.inc();
        self.metrics
            .reconcile_seconds
            .observe(started.elapsed().as_secs_f64());
    }

    /// Fetches, concurrently, the cards whose key changed or whose last fetch failed long
    /// enough ago.
    async fn fetch_cards(&mut self, agents: &[CompiledAgent]) {
        let slices = self.stores.slices.state();
        let mut due = Vec::new();
        for agent in agents {
            let id = (agent.namespace.clone(), agent.name.clone());
            let Some(target) = card::target(&slices, agent) else {
                let problem = CardProblem {
                    reason: "NoEndpoints",
                    message: format!(
                        "no ready address in EndpointSlices labelled {}={} in namespace {}",
                        card::SERVICE_NAME_LABEL,
                        agent.name,
                        agent.namespace
                    ),
                };
                self.cards.remove(&id);
                self.cards.insert(id, no_endpoint(problem));
                continue;
            };
            let key = CardKey {
                target,
                transport: self.fetcher.transport(agent),
                spiffe_id: agent.spiffe_id.to_string(),
            };
            let fresh = self.cards.get(&id).is_some_and(|c| {
                c.key == key && (c.outcome.is_ok() || c.at.elapsed() < self.retry)
            });
            if !fresh {
                due.push((id, key, agent));
            }
        }
        let fetcher = &self.fetcher;
        let fetched =
            futures::future::join_all(due.into_iter().map(|(id, key, agent)| async move {
                let outcome = fetcher.fetch(agent, &key.target.endpoint).await;
                (id, key, outcome)
            }))
            .await;
        for (id, key, outcome) in fetched {
            let labels = FetchLabels {
                transport: match key.transport {
                    Transport::Mtls => "mtls",
                    Transport::Http => "http",
                },
                result: outcome.as_ref().map_or_else(|p| p.reason, |_| "ok"),
            };
            self.metrics.card_fetches.get_or_create(&labels).inc();
            if let Err(problem) = &outcome {
                tracing::info!(agent = %format!("{}/{}", id.0, id.1), reason = problem.reason, message = %problem.message, "card not fetched");
            }
            self.cards.insert(
                id,
                CachedCard {
                    key,
                    outcome,
                    at: Instant::now(),
                },
            );
        }
    }

    async fn reconcile_agent(
        &self,
        object: &DynamicObject,
        state: &MeshState,
        spire: &SpireStatus,
    ) {
        let (Some(ns), name) = (object.namespace(), object.name_any()) else {
            return;
        };
        let Some(model) = model_of(state, &ns, &name) else {
            return; // a new object the next compile will include
        };
        let current: Option<AgentStatus> = object
            .data
            .get("status")
            .and_then(|s| serde_json::from_value(s.clone()).ok());
        let card = match model {
            Model::Compiled(_) => self
                .cards
                .get(&(ns.clone(), name.clone()))
                .map(|c| &c.outcome),
            _ => None,
        };
        let now = card::now();
        let facts = AgentFacts {
            generation: object.metadata.generation,
            model: model.as_facts(),
            spire,
            card,
            now: &now,
        };
        let desired = desired_status(current.as_ref(), &facts);
        if current.as_ref() != Some(&desired) {
            self.write_status(object, &ns, &name, &desired).await;
            if entered_spire_unavailable(current.as_ref(), &desired) {
                self.warn_spire_unavailable(object).await;
            }
        }
        if let Model::Compiled(agent) = model {
            self.roll(object, agent).await;
        }
    }

    async fn write_status(
        &self,
        object: &DynamicObject,
        ns: &str,
        name: &str,
        status: &AgentStatus,
    ) {
        let mut value = serde_json::to_value(status).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut value {
            for key in ["mtlsMode", "card"] {
                map.entry(key).or_insert(Value::Null);
            }
        }
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), ns, &self.agents);
        let patch = json!({"status": value});
        let result = api
            .patch_status(name, &PatchParams::apply(MANAGER), &Patch::Merge(&patch))
            .await;
        self.count_write("status", result.is_ok());
        match result {
            Ok(_) => {
                tracing::debug!(agent = %format!("{ns}/{name}"), generation = ?object.metadata.generation, "status written")
            }
            Err(e) => {
                tracing::warn!(agent = %format!("{ns}/{name}"), error = %e, "cannot write the Agent's status")
            }
        }
    }

    async fn warn_spire_unavailable(&self, object: &DynamicObject) {
        let event = Event {
            type_: EventType::Warning,
            reason: SPIRE_UNAVAILABLE.into(),
            note: Some(super::status::SPIRE_UNAVAILABLE_MESSAGE.into()),
            action: "CheckMTLS".into(),
            secondary: None,
        };
        let reference = object.object_ref(&self.agents);
        let result = self.recorder.publish(&event, &reference).await;
        self.count_write("event", result.is_ok());
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot record the SPIREUnavailable event");
        }
    }

    /// Puts the resolved mode on the agent's workload template when it differs.
    async fn roll(&self, object: &DynamicObject, agent: &CompiledAgent) {
        let target_ref: Option<TargetRef> = object
            .data
            .get("spec")
            .and_then(|s| s.get("targetRef"))
            .and_then(|t| serde_json::from_value(t.clone()).ok());
        let target = rollout::target(agent, target_ref.as_ref());
        let template = match target.kind {
            WorkloadKind::Deployment => self
                .stores
                .deployments
                .get(&ObjectRef::new(&target.name).within(&agent.namespace))
                .map(|d| d.spec.template.metadata.clone()),
            WorkloadKind::StatefulSet => self
                .stores
                .stateful_sets
                .get(&ObjectRef::new(&target.name).within(&agent.namespace))
                .map(|s| s.spec.template.metadata.clone()),
        };
        let Some(template) = template else {
            return; // no workload (yet): nothing to roll
        };
        let Some(patch) = rollout::template_patch(template.as_ref(), &agent.name, agent.mtls_mode)
        else {
            return;
        };
        let params = PatchParams::apply(MANAGER);
        let result = match target.kind {
            WorkloadKind::Deployment => {
                let api: Api<Deployment> = Api::namespaced(self.client.clone(), &agent.namespace);
                api.patch(&target.name, &params, &Patch::Merge(&patch))
                    .await
                    .map(|_| ())
            }
            WorkloadKind::StatefulSet => {
                let api: Api<StatefulSet> = Api::namespaced(self.client.clone(), &agent.namespace);
                api.patch(&target.name, &params, &Patch::Merge(&patch))
                    .await
                    .map(|_| ())
            }
        };
        self.count_write("workload", result.is_ok());
        match result {
            Ok(()) => {
                tracing::info!(agent = %agent.key(), workload = %format!("{:?} {}", target.kind, target.name), mode = %agent.mtls_mode, "pod template annotated: the workload rolls")
            }
            Err(e) => {
                tracing::warn!(agent = %agent.key(), error = %e, "cannot annotate the workload")
            }
        }
    }

    fn count_write(&self, object: &'static str, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.metrics
            .writes
            .get_or_create(&WriteLabels { object, result })
            .inc();
    }
}

fn no_endpoint(problem: CardProblem) -> CachedCard {
    CachedCard {
        key: CardKey {
            target: CardTarget {
                endpoint: String::new(),
                fingerprint: String::new(),
            },
            transport: Transport::Http,
            spiffe_id: String::new(),
        },
        outcome: Err(problem),
        at: Instant::now(),
    }
}

/// The model's view of one agent, owning its error text.
enum Model<'a> {
    Compiled(&'a CompiledAgent),
    Invalid(String),
    MeshInvalid(String),
}

impl Model<'_> {
    fn as_facts(&self) -> AgentModel<'_> {
        match self {
            Model::Compiled(agent) => AgentModel::Compiled(agent),
            Model::Invalid(errors) => AgentModel::Invalid(errors),
            Model::MeshInvalid(errors) => AgentModel::MeshInvalid(errors),
        }
    }
}

fn model_of<'a>(state: &'a MeshState, ns: &str, name: &str) -> Option<Model<'a>> {
    let object = format!("Agent {ns}/{name}");
    let own: Vec<String> = state.errors_for(&object).map(located).collect();
    if !own.is_empty() {
        return Some(Model::Invalid(own.join("; ")));
    }
    if let Some(agent) = state.snapshot.as_ref().and_then(|s| s.agent(ns, name)) {
        return Some(Model::Compiled(agent));
    }
    if state.errors.is_empty() {
        return None;
    }
    let all: Vec<String> = state.errors.iter().map(located).collect();
    Some(Model::MeshInvalid(all.join("; ")))
}

fn entered_spire_unavailable(current: Option<&AgentStatus>, desired: &AgentStatus) -> bool {
    let reason = |s: &AgentStatus| {
        s.conditions
            .iter()
            .find(|c| c.type_ == MTLS_READY)
            .map(|c| c.reason.clone())
    };
    reason(desired).as_deref() == Some(SPIRE_UNAVAILABLE)
        && current.and_then(reason).as_deref() != Some(SPIRE_UNAVAILABLE)
}
