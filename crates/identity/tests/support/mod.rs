//! Test helpers shared by the identity crate's integration tests.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use warden_identity::SpiffeId;

/// A loopback TLS server that accepts connections forever and reports each handshake's
/// outcome: the verified client ID, or the error.
pub struct Server {
    pub addr: std::net::SocketAddr,
    pub outcomes: tokio::sync::mpsc::UnboundedReceiver<Result<Option<SpiffeId>, std::io::Error>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts a server on 127.0.0.1 with `config`. Each accepted connection completes the
/// handshake, writes one byte and closes.
pub async fn serve(config: rustls::ServerConfig) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let (tx, outcomes) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let outcome = match acceptor.accept(tcp).await {
                    Ok(mut tls) => {
                        let id = warden_identity::tls::peer_spiffe_id(tls.get_ref().1);
                        let _ = tls.write_all(b"k").await;
                        let _ = tls.shutdown().await;
                        Ok(id)
                    }
                    Err(e) => Err(e),
                };
                let _ = tx.send(outcome);
            });
        }
    });
    Server {
        addr,
        outcomes,
        task,
    }
}

/// Connects, completes the handshake and reads the server's one byte. Returns the server's
/// verified SPIFFE ID.
pub async fn connect(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> Result<Option<SpiffeId>, std::io::Error> {
    use tokio::io::AsyncReadExt;
    let tcp = TcpStream::connect(addr).await?;
    let mut tls = TlsConnector::from(config)
        .connect(warden_identity::tls::mesh_server_name(), tcp)
        .await?;
    let id = warden_identity::tls::peer_spiffe_id(tls.get_ref().1);
    let mut byte = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(5), tls.read_exact(&mut byte))
        .await
        .map_err(|_| std::io::Error::other("timed out reading from server"))??;
    Ok(id)
}
