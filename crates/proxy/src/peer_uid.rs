//! Which OS user opened a loopback TCP connection, from the kernel's socket tables
//! (`/proc/net/tcp` and `/proc/net/tcp6`).
//!
//! A localhost port (the sidecar's egress) is reachable by every process on the machine; the
//! port alone does not say which agent is calling. On one host the kernel does: the client's
//! end of an accepted connection is a socket whose local address is our peer's and whose
//! remote address is ours, and its table row carries the uid that created it. A listener that
//! must serve one agent only (`--egress-allow-uid`) closes any connection whose client socket
//! is owned by another uid, or cannot be found (fail closed).
//!
//! The same row, seen from the other side, says who holds a port we dial (`--app-uid`): the
//! server end of our connection is the socket the listener accepted, owned by the uid that
//! created the listener.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The kernel's TCP socket tables, IPv4 then IPv6.
const TABLES: [&str; 2] = ["/proc/net/tcp", "/proc/net/tcp6"];

/// The uid that owns the client end of the connection accepted at `local` from `remote`, or
/// `None` when no table has it (the client already closed it, or it is not on this host).
pub fn client_uid(local: SocketAddr, remote: SocketAddr) -> Option<u32> {
    other_end_uid(local, remote)
}

/// The uid that owns the server end of our outgoing connection from `local` to `remote`: the
/// socket the listener at `remote` accepted (or still holds in its accept queue), which
/// carries the uid of whoever created that listener — so it says who holds the port we
/// reached (`--app-uid`). `None` when no table has it.
pub fn server_uid(local: SocketAddr, remote: SocketAddr) -> Option<u32> {
    other_end_uid(local, remote)
}

/// The uid of the socket at the other end of our socket `local` ↔ `remote`: the row whose
/// local address is `remote` and remote address `local`. Which end that is (the client of an
/// accepted connection, the server of a dialled one) is the callers' to say.
fn other_end_uid(local: SocketAddr, remote: SocketAddr) -> Option<u32> {
    TABLES.iter().find_map(|table| {
        let text = std::fs::read_to_string(table).ok()?;
        find_owner(&text, remote, local)
    })
}

/// Whether `uid` opened the connection accepted at `local` from `remote`.
pub fn opened_by(uid: u32, local: SocketAddr, remote: SocketAddr) -> bool {
    client_uid(local, remote) == Some(uid)
}

/// The uid of the row of `table` (the text of `/proc/net/tcp{,6}`) whose local address is
/// `socket_local` and remote address `socket_remote`.
fn find_owner(table: &str, socket_local: SocketAddr, socket_remote: SocketAddr) -> Option<u32> {
    let (want_local, want_remote) = (canonical(socket_local), canonical(socket_remote));
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (local, remote, uid) = (fields.get(1)?, fields.get(2)?, fields.get(7)?);
        let matches = parse_addr(local)? == want_local && parse_addr(remote)? == want_remote;
        matches.then(|| uid.parse().ok()).flatten()
    })
}

/// IPv4-mapped IPv6 addresses (`::ffff:127.0.0.1`, as a dual-stack socket lists them) as the
/// IPv4 address they are.
fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), addr.port()),
            None => addr,
        },
        IpAddr::V4(_) => addr,
    }
}

/// `0100007F:1F90` (IPv4) or 32 hex digits `:PORT` (IPv6). The kernel prints each 32-bit word
/// of the address in the machine's byte order and the port in host order.
fn parse_addr(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words = (0..ip.len() / 8)
        .map(|i| u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16).ok())
        .collect::<Option<Vec<u32>>>()?;
    let ip = match words.as_slice() {
        [one] => IpAddr::V4(Ipv4Addr::from(one.to_ne_bytes())),
        [a, b, c, d] => {
            let mut bytes = [0u8; 16];
            for (chunk, word) in bytes.chunks_mut(4).zip([a, b, c, d]) {
                chunk.copy_from_slice(&word.to_ne_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(canonical(SocketAddr::new(ip, port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex4(ip: Ipv4Addr) -> String {
        format!("{:08X}", u32::from_ne_bytes(ip.octets()))
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn addresses_parse_in_the_kernels_byte_order() {
        let lo = hex4(Ipv4Addr::LOCALHOST);
        assert_eq!(
            parse_addr(&format!("{lo}:1F90")),
            Some(addr("127.0.0.1:8080"))
        );
        let mapped = Ipv4Addr::LOCALHOST.to_ipv6_mapped();
        let words: String = mapped
            .octets()
            .chunks(4)
            .map(|c| format!("{:08X}", u32::from_ne_bytes([c[0], c[1], c[2], c[3]])))
            .collect();
        assert_eq!(
            parse_addr(&format!("{words}:0050")),
            Some(addr("127.0.0.1:80")),
            "a v4-mapped address is the IPv4 one"
        );
        assert_eq!(parse_addr("zz:0050"), None);
        assert_eq!(parse_addr("0100007F"), None);
    }

    /// A `/proc/net/tcp` text: a listener at 127.0.0.1:8080 and the socket it accepted from
    /// 127.0.0.1:50000 owned by `server`, the client's socket at :50000 by `client`.
    fn loopback_pair(server: u32, client: u32) -> String {
        let lo = hex4(Ipv4Addr::LOCALHOST);
        format!(
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
             0: {lo}:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000 {server:>5}        0 1 1\n\
             1: {lo}:1F90 {lo}:C350 01 00000000:00000000 00:00000000 00000000 {server:>5}        0 2 1\n\
             2: {lo}:C350 {lo}:1F90 01 00000000:00000000 00:00000000 00000000 {client:>5}        0 3 1\n"
        )
    }

    #[test]
    fn the_owner_is_the_row_of_the_client_end_not_the_servers() {
        let table = loopback_pair(0, 1001);
        // The listener at :8080 accepted a connection from :50000.
        let (local, remote) = (addr("127.0.0.1:8080"), addr("127.0.0.1:50000"));
        assert_eq!(find_owner(&table, remote, local), Some(1001));
        assert_eq!(
            find_owner(&table, local, remote),
            Some(0),
            "the server end is ours"
        );
        assert_eq!(find_owner(&table, addr("127.0.0.1:50001"), local), None);
    }

    #[test]
    fn the_server_end_of_a_dialled_connection_is_the_accepted_socket_with_the_listeners_uid() {
        // uid 1001 listens at :8080 and accepted our connection from :50000 (uid 0).
        let table = loopback_pair(1001, 0);
        let (local, app) = (addr("127.0.0.1:50000"), addr("127.0.0.1:8080"));
        // What `server_uid(local, app)` reads: the row whose local is `app`, remote `local`.
        assert_eq!(find_owner(&table, app, local), Some(1001));
        assert_eq!(find_owner(&table, local, app), Some(0), "our own end");
        assert_eq!(find_owner(&table, app, addr("127.0.0.1:50001")), None);
    }

    #[test]
    fn a_dialled_loopback_port_is_held_by_this_process_uid_even_before_accept() {
        use std::os::unix::fs::MetadataExt;
        let me = std::fs::metadata("/proc/self").unwrap().uid();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (local, remote) = (client.local_addr().unwrap(), client.peer_addr().unwrap());
        // Not accepted yet: the socket waiting in the listener's queue has the row.
        assert_eq!(server_uid(local, remote), Some(me));
        let (server, _) = listener.accept().unwrap();
        assert_eq!(server_uid(local, remote), Some(me));
        let unknown = addr("127.0.0.1:1");
        assert_eq!(server_uid(local, unknown), None, "fail closed: no row");
        drop((client, server));
    }

    #[test]
    fn a_live_loopback_connection_is_owned_by_this_process_uid() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, remote) = listener.accept().unwrap();
        let local = server.local_addr().unwrap();
        use std::os::unix::fs::MetadataExt;
        let me = std::fs::metadata("/proc/self").unwrap().uid();
        assert_eq!(client_uid(local, remote), Some(me));
        assert!(opened_by(me, local, remote));
        assert!(!opened_by(me.wrapping_add(1), local, remote));
        drop(client);
    }
}
