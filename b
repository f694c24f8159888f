23796 1 /work/main/target/release/warden_sidecar_--inbound_127.0.0.1
23797 386 /work/main/target/release/warden_sidecar_--inbound_127.0.0.1
23798 559 /work/main/target/release/warden_gateway_--listen_127.0.0.1:
23799 333 /work/main/target/release/warden_sidecar_--inbound_127.0.0.1
