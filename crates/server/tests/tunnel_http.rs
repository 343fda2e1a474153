//! The door's HTTP through a node's tunnel: a large answer from a web server that closes
//! its connection right after answering arrives whole.

use hearth_agent::tunnel::joined_pair;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_answer_from_a_server_that_closes_at_once_arrives_whole() {
    let body: Vec<u8> = (0..600_000).map(|i| (i % 251) as u8).collect();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let served = body.clone();
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = listener.accept().await.expect("accept");
            let served = served.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    served.len()
                );
                sock.write_all(head.as_bytes()).await.expect("head");
                sock.write_all(&served).await.expect("body");
                // Gone at once, as some servers do.
            });
        }
    });
    let (door_side, node_side) = joined_pair();
    for id in 1..=20u64 {
        let socket = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        node_side.attach(id, socket);
        let (door, tunnel) = tokio::io::duplex(64 * 1024);
        door_side.attach(id, tunnel);
        let (mut sender, conn) = hyper::client::conn::http1::handshake::<
            _,
            http_body_util::Empty<hyper::body::Bytes>,
        >(TokioIo::new(door))
        .await
        .expect("handshake");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = hyper::Request::builder()
            .uri("/big.js")
            .header("host", "x")
            .body(http_body_util::Empty::new())
            .expect("req");
        let resp = sender.send_request(req).await.expect("response");
        drop(sender);
        let got = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(got.len(), body.len(), "round {id}");
        assert!(got[..] == body[..], "round {id}");
    }
}
