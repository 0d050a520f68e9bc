//! Throwaway NATS servers with JetStream: a single server through restarts and crashes, a
//! three-server cluster losing a server, the shared server.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use testservers::{NatsCluster, NatsServer, Server};

fn stream_config(name: &str, replicas: usize) -> stream::Config {
    stream::Config {
        name: name.to_owned(),
        subjects: vec![format!("{name}.>")],
        num_replicas: replicas,
        ..Default::default()
    }
}

/// Publishes one message and waits for JetStream's acknowledgement; returns its sequence.
async fn publish(js: &jetstream::Context, subject: &str, payload: &'static str) -> u64 {
    js.publish(subject.to_owned(), payload.into()).await.unwrap().await.unwrap().sequence
}

/// Publishes until acknowledged, for the seconds a cluster needs to elect a new leader.
async fn publish_until_acked(js: &jetstream::Context, subject: &str, payload: &'static str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let attempt = async { js.publish(subject.to_owned(), payload.into()).await?.await };
        match tokio::time::timeout(Duration::from_secs(5), attempt).await {
            Ok(Ok(ack)) => return ack.sequence,
            Ok(Err(e)) if Instant::now() < deadline => eprintln!("not acknowledged yet: {e}"),
            Err(_) if Instant::now() < deadline => eprintln!("not acknowledged yet: timed out"),
            failed => panic!("no acknowledgement within 60 s: {failed:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn message_count(js: &jetstream::Context, name: &str) -> u64 {
    let mut stream = js.get_stream(name).await.unwrap();
    stream.info().await.unwrap().state.messages
}

#[tokio::test]
async fn a_single_server_keeps_acknowledged_messages_through_restart_and_kill9() {
    let server = NatsServer::new().unwrap();
    let _log = server.log_guard();
    let port = server.port();
    assert!(server.is_healthy());
    assert_eq!(server.cluster_name(), None);
    let name = testservers::unique_name("orders");
    let js = jetstream::new(server.connect().await.unwrap());
    js.create_stream(stream_config(&name, 1)).await.unwrap();
    assert_eq!(publish(&js, &format!("{name}.created"), "first").await, 1);

    server.restart().unwrap();
    assert_eq!(server.port(), port);
    let js = jetstream::new(server.connect().await.unwrap());
    assert_eq!(message_count(&js, &name).await, 1);
    assert!(matches!(
        server.start(),
        Err(testservers::Error::Process(serverproc::Error::AlreadyRunning))
    ));

    // kill -9 right after an acknowledgement: the store recovers the message.
    assert_eq!(publish(&js, &format!("{name}.created"), "second").await, 2);
    let pid = server.pid().unwrap();
    server.kill9().unwrap();
    assert!(!server.is_running());
    assert!(!serverproc::process_exists(pid));
    assert!(!server.is_healthy());
    server.start().unwrap();
    let js = jetstream::new(server.connect().await.unwrap());
    assert_eq!(message_count(&js, &name).await, 2);
    let stream = js.get_stream(&name).await.unwrap();
    let second = stream.get_raw_message(2).await.unwrap();
    assert_eq!(&second.payload[..], b"second");

    server.stop().unwrap();
    server.stop().unwrap();
    server.kill9().unwrap();
}

#[tokio::test]
async fn a_three_server_cluster_keeps_a_replicated_stream_through_the_loss_of_a_server() {
    let cluster = NatsCluster::new().unwrap();
    let _logs: Vec<_> = cluster.servers().iter().map(NatsServer::log_guard).collect();
    assert_eq!(cluster.servers().len(), 3);
    for server in cluster.servers() {
        assert_eq!(server.cluster_name(), Some(cluster.name()));
        assert!(server.is_healthy(), "{} is healthy once started", server.name());
    }
    let name = testservers::unique_name("replicated");
    let subject = format!("{name}.event");
    let js = jetstream::new(cluster.connect().await.unwrap());
    let mut stream = js.create_stream(stream_config(&name, 3)).await.unwrap();
    assert_eq!(publish(&js, &subject, "one").await, 1);
    let info = stream.info().await.unwrap();
    let placement = info.cluster.clone().unwrap();
    assert_eq!(placement.name.as_deref(), Some(cluster.name()));
    assert_eq!(placement.replicas.len(), 2, "a leader and two followers: {placement:?}");

    // Kill the stream's leader: the two others elect a new one and keep acknowledging.
    let leader = placement.leader.unwrap();
    let victim = cluster.servers().iter().find(|s| s.name() == leader).unwrap();
    victim.kill9().unwrap();
    assert_eq!(publish_until_acked(&js, &subject, "two").await, 2);
    let mut stream = js.get_stream(&name).await.unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(info.state.messages, 2);
    assert_ne!(info.cluster.as_ref().unwrap().leader.as_deref(), Some(leader.as_str()));

    // The killed server comes back and catches up.
    victim.start().unwrap();
    assert!(victim.is_healthy());
    assert_eq!(publish_until_acked(&js, &subject, "three").await, 3);

    // All stopped, all started again together: the stream and its messages are still there.
    for server in cluster.servers() {
        server.stop().unwrap();
    }
    cluster.start_stopped().unwrap();
    let js = jetstream::new(cluster.connect().await.unwrap());
    assert_eq!(publish_until_acked(&js, &subject, "four").await, 4);
    assert_eq!(message_count(&js, &name).await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_server_serves_many_tasks() {
    let tasks: Vec<_> = (0..4)
        .map(|i| {
            tokio::spawn(async move {
                let server = testservers::nats::shared();
                let name = testservers::unique_name(&format!("task{i}"));
                let js = jetstream::new(server.connect().await.unwrap());
                js.create_stream(stream_config(&name, 1)).await.unwrap();
                assert_eq!(publish(&js, &format!("{name}.x"), "hello").await, 1);
                server.port()
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), testservers::nats::shared().port());
    }
}

#[tokio::test]
async fn drop_stops_the_server_and_removes_its_store() {
    let server = NatsServer::new().unwrap();
    let pid = server.pid().unwrap();
    let store = server.store_dir();
    assert!(store.join("jetstream").is_dir());
    drop(server);
    assert!(!serverproc::process_exists(pid));
    assert!(!store.exists(), "{} must be removed", store.display());
}
