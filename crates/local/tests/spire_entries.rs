//! `SpireServer::register` against a real SPIRE server (testkit `Spire`): the gateway's entry
//! carries its host names and follows them as they change, a name SPIRE refuses is left out
//! and reported with SPIRE's reason (the entry, and so the SVID, stays), and an agent's entry
//! carries none.

use std::collections::BTreeSet;

use warden_identity::SpiffeId;
use warden_local::spire::SpireServer;
use warden_testkit::spire::Spire;

const GATEWAY: &str = "spiffe://warden.local/ns/warden-system/sa/warden-gateway";
const AGENT: &str = "spiffe://warden.local/ns/team-alpha/sa/orchestrator";
const ALPHA: &str = "*.team-alpha.a2a.localhost";
const BETA: &str = "*.team-beta.a2a.localhost";

/// The entries for `id` as `entry show -output json` prints them.
fn entries(spire: &Spire, id: &str) -> Vec<serde_json::Value> {
    let text = spire.server_cli(&["entry", "show", "-output", "json", "-spiffeID", id]);
    let list: serde_json::Value = serde_json::from_str(&text).expect("entry show JSON");
    list["entries"].as_array().cloned().unwrap_or_default()
}

/// The one entry for `id`: its DNS names and revision.
fn the_entry(spire: &Spire, id: &str) -> (BTreeSet<String>, String) {
    let all = entries(spire, id);
    assert_eq!(all.len(), 1, "one entry for {id}: {all:#?}");
    let names = all[0]["dns_names"]
        .as_array()
        .map(|n| {
            n.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let revision = all[0]["revision_number"].to_string();
    (names, revision)
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

fn owned(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

#[tokio::test]
async fn the_gateways_entry_follows_its_host_names_and_a_refused_name_is_left_out_and_named() {
    let Some(spire) = Spire::start("warden.local", &[]) else {
        return;
    };
    let _timer = warden_testkit::deps::TierTimer::new("SPIRE entries' DNS names");
    let server = SpireServer {
        binary: warden_testkit::deps::bin_dir().join("spire-server"),
        socket: spire.server_socket(),
    };
    let gateway = SpiffeId::new(GATEWAY).unwrap();
    let parent = spire.agent_id.as_str();

    // `*` passes warden's own host-name check (a leading `*` label) but SPIRE refuses it:
    // the entry is made with the rest, and the refusal names the name and SPIRE's reason.
    let refused = server
        .register(parent, &gateway, 0, &owned(&[ALPHA, "*"]))
        .await
        .expect("registered");
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].name, "*");
    let said = refused[0].to_string();
    eprintln!("SPIRE refused: {said}");
    assert!(
        said.contains("\"*\"") && said.contains(GATEWAY) && said.contains("wildcard"),
        "{said}"
    );
    assert_eq!(the_entry(&spire, GATEWAY).0, set(&[ALPHA]));

    // A namespace added: the same entry is updated, not a second one made.
    let refused = server
        .register(parent, &gateway, 0, &owned(&[ALPHA, BETA]))
        .await
        .expect("updated");
    assert!(refused.is_empty(), "{refused:?}");
    let (names, revision) = the_entry(&spire, GATEWAY);
    assert_eq!(names, set(&[ALPHA, BETA]));

    // The same names again (in another order): nothing is written.
    server
        .register(parent, &gateway, 0, &owned(&[BETA, ALPHA]))
        .await
        .expect("kept");
    assert_eq!(the_entry(&spire, GATEWAY), (names, revision));

    // A namespace gone: its name goes too.
    server
        .register(parent, &gateway, 0, &owned(&[BETA]))
        .await
        .expect("updated");
    assert_eq!(the_entry(&spire, GATEWAY).0, set(&[BETA]));

    // An agent's entry keeps no DNS names, even one made with a name by hand earlier.
    spire.server_cli(&[
        "entry",
        "create",
        "-parentID",
        parent,
        "-spiffeID",
        AGENT,
        "-selector",
        "unix:uid:42201",
        "-dns",
        "stale.example",
    ]);
    let agent = SpiffeId::new(AGENT).unwrap();
    let refused = server
        .register(parent, &agent, 42201, &[])
        .await
        .expect("agent registered");
    assert!(refused.is_empty());
    assert_eq!(the_entry(&spire, AGENT).0, BTreeSet::new());
}
