//! Async model crates start and drop the server from inside their own runtime.
//! That must work: the server's runtime lives on its own thread, so neither
//! `start` (which enters the server's runtime to bind) nor `Drop` (which joins
//! the server thread) may trip tokio's "runtime inside a runtime" panics.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use mock_server::{MockConfig, MockServer};

#[test]
fn start_use_and_drop_inside_another_runtime() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build client runtime");
    rt.block_on(async {
        let server = MockServer::start(MockConfig::default()).expect("start server");
        let mut s = tokio::net::TcpStream::connect(server.addr())
            .await
            .expect("connect");
        s.write_all(b"GET /page/1?latency_ms=5 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("send");
        let mut reply = Vec::new();
        s.read_to_end(&mut reply).await.expect("read");
        assert!(reply.starts_with(b"HTTP/1.1 200 OK"));
        assert_eq!(server.stats().total_requests, 1);
        drop(server);
    });
}
