//! The mesh as the cluster holds it, compiled live: reflectors over warden Agents,
//! MeshConfigs, Namespaces, Secrets and ConfigMaps feed the model's own compiler, and every
//! change yields a new [`MeshState`] on a `tokio::sync::watch` channel.
//!
//! Why one module for the controller and the gateway: both must decide by the same snapshot
//! that `warden validate` and local mode compile, so both run the same reflectors and the same
//! `warden_model::compile` rather than each reading the cluster its own way.
//!
//! - Changes are debounced ([`WatchOptions::debounce`], a few milliseconds), so a `kubectl
//!   apply` of ten objects compiles once or twice, not ten times, and a change is compiled
//!   well within a second.
//! - Agents and MeshConfigs are read as untyped objects and parsed by the model's loader
//!   ([`Manifests::push_document`]): a malformed object is an error naming it and its field,
//!   instead of a watch stream that fails to decode.
//! - A set that does not compile never replaces a good snapshot: [`MeshState::snapshot`] stays
//!   the last good one and [`MeshState::errors`] says, per object, what is wrong now.
//! - Workloads' mode annotations are not read: in the cluster the controller writes them from
//!   the compiled mode, so reading them back would be circular.

use std::fmt::Debug;
use std::hash::Hash;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use warden_model::loader::{Origin, Sourced};
use warden_model::{Agent, Manifests, MeshConfig, MeshSnapshot, ModelError, compile};

/// The "file" that objects read from the apiserver come from, in error origins.
pub const CLUSTER_ORIGIN: &str = "cluster";

/// How the watch behaves.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// How long to wait after a change for more before compiling.
    pub debounce: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            debounce: Duration::from_millis(20),
        }
    }
}

/// The latest compile of the cluster's mesh objects.
#[derive(Debug, Clone, Default)]
pub struct MeshState {
    /// The last snapshot that compiled (with its per-agent `accepted` reasons); `None` until
    /// the caches have synced and a first set compiled.
    pub snapshot: Option<Arc<MeshSnapshot>>,
    /// Why the cluster's objects as they are now did not compile (empty when `snapshot`
    /// reflects them). Each error names its object (`Agent ns/name`) and field.
    pub errors: Vec<ModelError>,
    /// Every cache has listed its kind once: the state reflects the cluster.
    pub synced: bool,
    /// How many compiles ran (good or bad), to tell states apart.
    pub generation: u64,
}

impl MeshState {
    /// The errors about one object, by its `Kind ns/name` (`Agent team-beta/specialist`).
    pub fn errors_for<'a>(&'a self, object: &'a str) -> impl Iterator<Item = &'a ModelError> {
        self.errors
            .iter()
            .filter(move |e| e.origin.as_ref().and_then(|o| o.object.as_deref()) == Some(object))
    }
}

/// The reflector caches the mesh is compiled from, for callers that need the objects
/// themselves (an Agent's generation and status, a Namespace's labels).
#[derive(Clone)]
pub struct MeshStores {
    /// `warden.dev` Agents, untyped (see the module doc).
    pub agents: Store<DynamicObject>,
    /// MeshConfigs, untyped.
    pub mesh_configs: Store<DynamicObject>,
    /// Namespaces.
    pub namespaces: Store<Namespace>,
    /// Secrets (`headersFrom`).
    pub secrets: Store<Secret>,
    /// ConfigMaps (`headersFrom`).
    pub config_maps: Store<ConfigMap>,
}

impl MeshStores {
    /// Waits until every cache has listed its kind once.
    pub async fn wait_until_ready(&self) {
        let _ = tokio::join!(
            self.agents.wait_until_ready(),
            self.mesh_configs.wait_until_ready(),
            self.namespaces.wait_until_ready(),
            self.secrets.wait_until_ready(),
            self.config_maps.wait_until_ready(),
        );
    }

    /// The cluster's mesh objects as the model's manifests, and the errors of the objects the
    /// loader refused.
    pub fn manifests(&self) -> (Manifests, Vec<ModelError>) {
        let mut manifests = Manifests::default();
        let mut errors = Vec::new();
        for object in self.agents.state().iter().chain(&self.mesh_configs.state()) {
            push_dynamic(object, &mut manifests, &mut errors);
        }
        manifests.namespaces = sourced("Namespace", &self.namespaces);
        manifests.secrets = sourced("Secret", &self.secrets);
        manifests.config_maps = sourced("ConfigMap", &self.config_maps);
        // Notices are about kinds a file may mix in; here every object is of a kind we asked for.
        manifests.notices.clear();
        (manifests, errors)
    }
}

/// The running watch: the latest [`MeshState`] and the caches behind it. Dropping it stops
/// every reflector and the compile loop.
pub struct MeshWatch {
    state: watch::Receiver<Arc<MeshState>>,
    stores: MeshStores,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for MeshWatch {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl MeshWatch {
    /// Starts the reflectors and the compile loop on the current tokio runtime.
    pub fn start(client: kube::Client, options: WatchOptions) -> Self {
        let changed = Arc::new(Notify::new());
        let on_change = {
            let changed = changed.clone();
            move || changed.notify_one()
        };
        let mut tasks = Vec::new();
        let agents = ApiResource::erase::<Agent>(&());
        let configs = ApiResource::erase::<MeshConfig>(&());
        let stores = MeshStores {
            agents: reflect(
                Api::all_with(client.clone(), &agents),
                agents.clone(),
                on_change.clone(),
                &mut tasks,
            ),
            mesh_configs: reflect(
                Api::all_with(client.clone(), &configs),
                configs.clone(),
                on_change.clone(),
                &mut tasks,
            ),
            namespaces: reflect(Api::all(client.clone()), (), on_change.clone(), &mut tasks),
            secrets: reflect(Api::all(client.clone()), (), on_change.clone(), &mut tasks),
            config_maps: reflect(Api::all(client), (), on_change, &mut tasks),
        };
        let (tx, state) = watch::channel(Arc::new(MeshState::default()));
        tasks.push(tokio::spawn(compile_loop(
            stores.clone(),
            changed,
            tx,
            options,
        )));
        Self {
            state,
            stores,
            tasks,
        }
    }

    /// A receiver of the latest state; `changed()` wakes on every compile.
    pub fn subscribe(&self) -> watch::Receiver<Arc<MeshState>> {
        self.state.clone()
    }

    /// The latest state.
    pub fn current(&self) -> Arc<MeshState> {
        self.state.borrow().clone()
    }

    /// The caches.
    pub fn stores(&self) -> &MeshStores {
        &self.stores
    }

    /// Waits until the caches have synced and the first compile ran.
    pub async fn synced(&self) -> Arc<MeshState> {
        let mut rx = self.state.clone();
        match rx.wait_for(|s| s.synced).await {
            Ok(state) => state.clone(),
            // The compile loop is gone (the runtime is shutting down): the last state it sent.
            Err(_) => self.current(),
        }
    }
}

/// Runs a reflector for `api` on the current runtime (its task is pushed to `tasks`), calling
/// `on_change` after each change the cache applies (and once when the first list is in).
/// Watch errors are logged and retried with kube's default backoff. For the controller's and
/// the gateway's other caches (EndpointSlices, workloads) too.
pub fn reflect<K>(
    api: Api<K>,
    dyntype: K::DynamicType,
    on_change: impl Fn() + Send + 'static,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    let writer = reflector::store::Writer::new(dyntype);
    let store = writer.as_reader();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(|object| object.managed_fields_mut().clear());
    tasks.push(tokio::spawn(async move {
        let mut events = std::pin::pin!(reflector::reflector(writer, stream));
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
                Ok(_) => on_change(),
                Err(error) => {
                    tracing::warn!(kind = std::any::type_name::<K>(), %error, "watch failed; retrying")
                }
            }
        }
    }));
    store
}

async fn compile_loop(
    stores: MeshStores,
    changed: Arc<Notify>,
    tx: watch::Sender<Arc<MeshState>>,
    options: WatchOptions,
) {
    stores.wait_until_ready().await;
    let mut state = MeshState {
        synced: true,
        ..MeshState::default()
    };
    let mut version = 0;
    loop {
        let (manifests, mut errors) = stores.manifests();
        state.generation += 1;
        if errors.is_empty() {
            match compile(&manifests, version + 1) {
                Ok(snapshot) => {
                    version += 1;
                    state.snapshot = Some(Arc::new(snapshot));
                }
                Err(e) => errors = e,
            }
        }
        for error in &errors {
            tracing::warn!(error = %crate::validate::located(error), "the cluster's mesh does not compile; keeping the last good snapshot");
        }
        state.errors = errors;
        tracing::debug!(generation = state.generation, version, "mesh compiled");
        if tx.send(Arc::new(state.clone())).is_err() {
            return; // nobody listens any more
        }
        changed.notified().await;
        tokio::time::sleep(options.debounce).await;
    }
}

fn cluster_origin(object: String) -> Origin {
    Origin {
        file: PathBuf::from(CLUSTER_ORIGIN),
        document: 1,
        object: Some(object),
    }
}

/// Parses an Agent or MeshConfig from the apiserver with the model's loader.
fn push_dynamic(object: &DynamicObject, manifests: &mut Manifests, errors: &mut Vec<ModelError>) {
    let origin = cluster_origin(String::new());
    match serde_yaml_ng::to_value(object) {
        Ok(value) => manifests.push_document(origin, value, errors),
        Err(e) => errors.push(ModelError {
            origin: Some(cluster_origin(format!(
                "{} {}",
                object.types.as_ref().map_or("?", |t| t.kind.as_str()),
                object.name_any()
            ))),
            field: None,
            message: format!("cannot read the object: {e}"),
        }),
    }
}

/// A typed cache's objects, each with its `Kind ns/name` origin.
fn sourced<K>(kind: &str, store: &Store<K>) -> Vec<Sourced<K>>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    store
        .state()
        .iter()
        .map(|object| {
            let name = match object.meta().namespace.as_deref() {
                Some(ns) => format!("{kind} {ns}/{}", object.name_any()),
                None => format!("{kind} {}", object.name_any()),
            };
            Sourced {
                resource: (**object).clone(),
                origin: cluster_origin(name),
            }
        })
        .collect()
}
