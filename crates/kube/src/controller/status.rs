//! An Agent's desired status as a pure function of what the controller knows about it: the
//! compiled agent (or why there is none), SPIRE's availability, the last card fetch. The
//! reconciler compares it with the status the Agent has and patches only when they differ,
//! so a quiet cluster sees no writes.
//!
//! Conditions keep their `lastTransitionTime` while their status stays the same, and carry the
//! Agent's `metadata.generation` as `observedGeneration`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use warden_model::resources::{AgentStatus, CardStatus, MeshConfigStatus};
use warden_model::{CompiledAgent, MtlsMode};

/// The `MTLSReady` message when SPIRE is missing (kagenti's wording, which users search for).
pub const SPIRE_UNAVAILABLE_MESSAGE: &str =
    "mTLS requires SPIRE; either deploy SPIRE or set mtls.mode: Disabled";
/// The `MTLSReady` reason when SPIRE is missing; also the Warning event's reason.
pub const SPIRE_UNAVAILABLE: &str = "SPIREUnavailable";

/// Condition types, in the order they are written.
pub const ACCEPTED: &str = "Accepted";
/// See [`ACCEPTED`].
pub const MTLS_READY: &str = "MTLSReady";
/// See [`ACCEPTED`].
pub const CARD_DISCOVERED: &str = "CardDiscovered";
/// See [`ACCEPTED`].
pub const READY: &str = "Ready";

/// Whether SPIRE serves this cluster, and how the controller knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpireStatus {
    /// SPIRE was detected.
    pub available: bool,
    /// What was found (or looked for), for the condition's message.
    pub evidence: String,
}

/// What the model says about an agent.
#[derive(Debug, Clone, Copy)]
pub enum AgentModel<'a> {
    /// Compiled into the current snapshot (with its own `accepted`).
    Compiled(&'a CompiledAgent),
    /// The Agent itself does not compile: the located errors.
    Invalid(&'a str),
    /// The agent is not in the last good snapshot because the mesh as a whole does not
    /// compile now (another object is at fault): the located errors.
    MeshInvalid(&'a str),
}

/// A successful card fetch.
#[derive(Debug, Clone, PartialEq)]
pub struct FetchedCard {
    /// What `status.card` records.
    pub card: CardStatus,
    /// Where it was fetched from, for the message.
    pub endpoint: String,
    /// The card is the agent's static `spec.card`, taken once its endpoint answered (what a
    /// gRPC-only app needs); the message must not say it was fetched.
    pub static_card: bool,
}

/// Why there is no card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardProblem {
    /// `NoEndpoints`, `FetchFailed`, …
    pub reason: &'static str,
    /// In words.
    pub message: String,
}

/// The outcome of the last card fetch.
pub type CardOutcome = Result<FetchedCard, CardProblem>;

/// Everything the desired status depends on.
#[derive(Debug, Clone, Copy)]
pub struct AgentFacts<'a> {
    /// The Agent's `metadata.generation`.
    pub generation: Option<i64>,
    /// The model's view.
    pub model: AgentModel<'a>,
    /// SPIRE's availability.
    pub spire: &'a SpireStatus,
    /// The last fetch, `None` while the first is pending.
    pub card: Option<&'a CardOutcome>,
    /// The time a condition that changes now is stamped with.
    pub now: &'a Time,
}

/// The status the Agent should have, given its `current` one.
pub fn desired_status(current: Option<&AgentStatus>, facts: &AgentFacts<'_>) -> AgentStatus {
    let mode = match facts.model {
        AgentModel::Compiled(agent) => Some(agent.mtls_mode),
        AgentModel::Invalid(_) | AgentModel::MeshInvalid(_) => None,
    };
    let accepted = accepted(facts.model);
    let mtls = mtls_ready(mode, facts.spire);
    let card = card_discovered(facts.card);
    let ready = ready(&accepted, &card);
    let old = current.map(|s| s.conditions.as_slice()).unwrap_or_default();
    let conditions = [accepted, mtls, card, ready]
        .into_iter()
        .map(|c| c.into_condition(old, facts.generation, facts.now))
        .collect();
    let card = match facts.card {
        Some(Ok(fetched)) => Some(fetched.card.clone()),
        // The last card seen stays, with its fetch time, until a fetch succeeds again.
        _ => current.and_then(|s| s.card.clone()),
    };
    AgentStatus {
        mtls_mode: mode,
        conditions,
        card,
    }
}

/// A MeshConfig's status: `Accepted` True when it compiles, else False `Invalid` with the
/// located errors about it (`errors`, empty when none).
pub fn mesh_config_status(
    current: Option<&MeshConfigStatus>,
    errors: &str,
    generation: Option<i64>,
    now: &Time,
) -> MeshConfigStatus {
    let want = if errors.is_empty() {
        Want::new(ACCEPTED, true, "Accepted", "the mesh-wide settings compile")
    } else {
        Want::new(ACCEPTED, false, "Invalid", errors)
    };
    let old = current.map(|s| s.conditions.as_slice()).unwrap_or_default();
    MeshConfigStatus {
        conditions: vec![want.into_condition(old, generation, now)],
    }
}

/// A condition before it is stamped.
struct Want {
    kind: &'static str,
    status: &'static str,
    reason: String,
    message: String,
}

impl Want {
    fn new(kind: &'static str, status: bool, reason: &str, message: impl Into<String>) -> Self {
        Self {
            kind,
            status: if status { "True" } else { "False" },
            reason: reason.to_owned(),
            message: message.into(),
        }
    }

    fn is_true(&self) -> bool {
        self.status == "True"
    }

    fn into_condition(self, old: &[Condition], generation: Option<i64>, now: &Time) -> Condition {
        let since = old
            .iter()
            .find(|c| c.type_ == self.kind && c.status == self.status)
            .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
        Condition {
            type_: self.kind.to_owned(),
            status: self.status.to_owned(),
            reason: self.reason,
            // The apiserver caps messages at 32 KiB; errors of a large mesh could exceed it.
            message: truncate(self.message, 4096),
            observed_generation: generation,
            last_transition_time: since,
        }
    }
}

fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

fn accepted(model: AgentModel<'_>) -> Want {
    match model {
        AgentModel::Compiled(agent) => Want::new(
            ACCEPTED,
            agent.accepted.status,
            &agent.accepted.reason,
            agent.accepted.message.clone(),
        ),
        AgentModel::Invalid(errors) => Want::new(ACCEPTED, false, "Invalid", errors),
        AgentModel::MeshInvalid(errors) => Want::new(
            ACCEPTED,
            false,
            "MeshInvalid",
            format!("the mesh does not compile, so this agent is not in it: {errors}"),
        ),
    }
}

fn mtls_ready(mode: Option<MtlsMode>, spire: &SpireStatus) -> Want {
    match (mode, spire.available) {
        (Some(MtlsMode::Disabled), _) => Want::new(
            MTLS_READY,
            true,
            "MTLSDisabled",
            "mtls.mode is Disabled: the agent's sidecar serves plain HTTP",
        ),
        (_, true) => Want::new(MTLS_READY, true, "SPIREAvailable", spire.evidence.clone()),
        (_, false) => Want::new(
            MTLS_READY,
            false,
            SPIRE_UNAVAILABLE,
            SPIRE_UNAVAILABLE_MESSAGE,
        ),
    }
}

fn card_discovered(card: Option<&CardOutcome>) -> Want {
    match card {
        None => Want {
            kind: CARD_DISCOVERED,
            status: "Unknown",
            reason: "Pending".into(),
            message: "the card has not been fetched yet".into(),
        },
        Some(Ok(fetched)) => {
            let how = match &fetched.card.attested_spiffe_id {
                Some(id) => format!("over mTLS; the server proved {id}"),
                None => "over plain HTTP (no identity proved)".into(),
            };
            Want::new(
                CARD_DISCOVERED,
                true,
                "CardFetched",
                match fetched.static_card {
                    false => format!("fetched from {} {how}", fetched.endpoint),
                    true => format!(
                        "the static card (spec.card); {} answered {how}",
                        fetched.endpoint
                    ),
                },
            )
        }
        Some(Err(problem)) => Want::new(
            CARD_DISCOVERED,
            false,
            problem.reason,
            problem.message.clone(),
        ),
    }
}

/// Ready: accepted and its card discovered. `MTLSReady` never blocks it (an agent without
/// SPIRE still serves, and says why it is not on mTLS).
fn ready(accepted: &Want, card: &Want) -> Want {
    match (accepted.is_true(), card.is_true()) {
        (true, true) => Want::new(READY, true, "Ready", "accepted and its card discovered"),
        (false, _) => Want::new(READY, false, "NotAccepted", accepted.message.clone()),
        (true, false) => Want::new(READY, false, "CardNotDiscovered", card.message.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;
    use warden_model::resources::TransportSecurity;

    fn time(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    fn snapshot() -> warden_model::MeshSnapshot {
        let mut manifests = warden_model::Manifests::default();
        let mut errors = Vec::new();
        warden_model::loader::load_str(
            std::path::Path::new("t.yaml"),
            "apiVersion: warden.dev/v1alpha1\nkind: Agent\nmetadata: {name: a, namespace: ns}\nspec: {mtls: {mode: Strict}}\n---\napiVersion: warden.dev/v1alpha1\nkind: Agent\nmetadata: {name: d, namespace: ns}\nspec: {mtls: {mode: Disabled}}\n",
            &mut manifests,
            &mut errors,
        );
        assert!(errors.is_empty(), "{errors:?}");
        warden_model::compile(&manifests, 1).unwrap()
    }

    fn spire(available: bool) -> SpireStatus {
        SpireStatus {
            available,
            evidence: "CSIDriver csi.spiffe.io".into(),
        }
    }

    fn fetched() -> CardOutcome {
        Ok(FetchedCard {
            card: CardStatus {
                transport_security: TransportSecurity::Mtls,
                attested_spiffe_id: Some("spiffe://warden.local/ns/ns/sa/a".into()),
                card_hash: Some("ab".into()),
                last_fetch_time: Some(time(100)),
            },
            endpoint: "10.0.0.1:8080".into(),
            static_card: false,
        })
    }

    fn condition<'a>(status: &'a AgentStatus, kind: &str) -> &'a Condition {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == kind)
            .unwrap_or_else(|| panic!("no {kind}"))
    }

    #[test]
    fn without_spire_mtls_is_not_ready_but_the_agent_is() {
        let snapshot = snapshot();
        let (spire, card) = (spire(false), fetched());
        let facts = AgentFacts {
            generation: Some(3),
            model: AgentModel::Compiled(snapshot.agent("ns", "a").unwrap()),
            spire: &spire,
            card: Some(&card),
            now: &time(200),
        };
        let status = desired_status(None, &facts);
        let mtls = condition(&status, MTLS_READY);
        assert_eq!(
            (mtls.status.as_str(), mtls.reason.as_str()),
            ("False", "SPIREUnavailable")
        );
        assert_eq!(mtls.message, SPIRE_UNAVAILABLE_MESSAGE);
        assert_eq!(mtls.observed_generation, Some(3));
        assert_eq!(condition(&status, READY).status, "True");
        assert_eq!(status.mtls_mode, Some(MtlsMode::Strict));
        assert_eq!(
            status.card.as_ref().map(|c| c.transport_security),
            Some(TransportSecurity::Mtls)
        );
    }

    #[test]
    fn disabled_mode_is_mtls_disabled_whatever_spire_does() {
        let snapshot = snapshot();
        let spire = spire(false);
        let facts = AgentFacts {
            generation: Some(1),
            model: AgentModel::Compiled(snapshot.agent("ns", "d").unwrap()),
            spire: &spire,
            card: None,
            now: &time(200),
        };
        let status = desired_status(None, &facts);
        let mtls = condition(&status, MTLS_READY);
        assert_eq!(
            (mtls.status.as_str(), mtls.reason.as_str()),
            ("True", "MTLSDisabled")
        );
        assert_eq!(condition(&status, CARD_DISCOVERED).status, "Unknown");
        assert_eq!(
            condition(&status, READY).reason,
            "CardNotDiscovered",
            "no card yet"
        );
    }

    #[test]
    fn an_unchanged_status_is_equal_and_keeps_its_transition_times() {
        let snapshot = snapshot();
        let (spire, card) = (spire(true), fetched());
        let facts = |now| AgentFacts {
            generation: Some(1),
            model: AgentModel::Compiled(snapshot.agent("ns", "a").unwrap()),
            spire: &spire,
            card: Some(&card),
            now,
        };
        let (t1, t2) = (time(200), time(900));
        let first = desired_status(None, &facts(&t1));
        let again = desired_status(Some(&first), &facts(&t2));
        assert_eq!(first, again, "nothing changed: nothing to patch");
        let unavailable = spire_false();
        let flipped = desired_status(
            Some(&first),
            &AgentFacts {
                spire: &unavailable,
                ..facts(&t2)
            },
        );
        assert_eq!(condition(&flipped, MTLS_READY).last_transition_time, t2);
        assert_eq!(condition(&flipped, ACCEPTED).last_transition_time, t1);
    }

    #[test]
    fn a_mesh_config_is_accepted_unless_it_has_errors() {
        let ok = mesh_config_status(None, "", Some(1), &time(10));
        assert_eq!(ok.conditions[0].status, "True");
        let bad = mesh_config_status(Some(&ok), "spec.trustDomain: invalid", Some(2), &time(20));
        assert_eq!(
            (
                bad.conditions[0].status.as_str(),
                bad.conditions[0].reason.as_str()
            ),
            ("False", "Invalid")
        );
        assert_eq!(bad.conditions[0].last_transition_time, time(20));
        assert_eq!(mesh_config_status(Some(&ok), "", Some(1), &time(30)), ok);
    }

    fn spire_false() -> SpireStatus {
        spire(false)
    }

    #[test]
    fn an_invalid_agent_is_not_accepted_and_keeps_its_last_card() {
        let spire = spire(true);
        let previous = AgentStatus {
            card: fetched().ok().map(|f| f.card),
            ..AgentStatus::default()
        };
        let problem: CardOutcome = Err(CardProblem {
            reason: "FetchFailed",
            message: "refused".into(),
        });
        let facts = AgentFacts {
            generation: Some(2),
            model: AgentModel::Invalid("spec.port: must be between 1 and 65535"),
            spire: &spire,
            card: Some(&problem),
            now: &time(5),
        };
        let status = desired_status(Some(&previous), &facts);
        let accepted = condition(&status, ACCEPTED);
        assert_eq!(
            (accepted.status.as_str(), accepted.reason.as_str()),
            ("False", "Invalid")
        );
        assert!(accepted.message.contains("spec.port"));
        assert_eq!(condition(&status, READY).reason, "NotAccepted");
        assert_eq!(condition(&status, CARD_DISCOVERED).reason, "FetchFailed");
        assert_eq!(status.card, previous.card);
    }
}
