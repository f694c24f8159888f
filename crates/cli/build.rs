//! Lays out the release `warden` binary with the functions its proxies run first.
//!
//! The binary's `.text` is ~20 MB (controller, webhooks, gRPC, SPIRE, CLI), but a sidecar or
//! gateway runs ~2 MB of it. Scattered through the file, that code touches ~150 of the 64 KiB
//! windows the kernel maps at once on a page fault ("fault-around"), so an idle sidecar held
//! 8 MiB of text. `link-order.txt` (made by `scripts/link-order.sh` from the functions callgrind
//! saw the proxies run under `warden-bench`) asks the linker to place those functions
//! together. Names that no longer exist (a dependency changed) are skipped by the linker, so
//! a stale list only loses the effect; regenerate it then.
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=link-order.txt");
    println!("cargo:rerun-if-env-changed=WARDEN_LINK_ORDER");
    println!("cargo:rerun-if-env-changed=RUSTC_LINKER");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    // `--symbol-ordering-file` is LLD's: the default linker of x86_64-unknown-linux-gnu since
    // Rust 1.90. Other targets keep their default layout; WARDEN_LINK_ORDER=0 turns it off.
    let lld_target = var("CARGO_CFG_TARGET_ARCH") == "x86_64"
        && var("CARGO_CFG_TARGET_OS") == "linux"
        && var("CARGO_CFG_TARGET_ENV") == "gnu";
    // A linker chosen by the user (config `linker`, or -C linker / -fuse-ld in RUSTFLAGS) may
    // not know the flag: their layout is theirs.
    let flags = var("CARGO_ENCODED_RUSTFLAGS");
    let own_linker = std::env::var_os("RUSTC_LINKER").is_some()
        || flags.contains("linker")
        || flags.contains("fuse-ld");
    let order = Path::new(&var("CARGO_MANIFEST_DIR")).join("link-order.txt");
    if var("PROFILE") == "release"
        && lld_target
        && !own_linker
        && var("WARDEN_LINK_ORDER") != "0"
        && order.is_file()
    {
        println!(
            "cargo:rustc-link-arg-bin=warden=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bin=warden=-Wl,--no-warn-symbol-ordering");
    }
}
