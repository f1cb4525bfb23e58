//! The transport against a minimal HTTP/1.1 server on 127.0.0.1 that records what reaches it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

const BODY: &str = r#"{"events":[{"id":"evt_1"}]}"#;
const SIGNATURE: &str = "t=1796341201,v1=e5708fe92a036560e8575ad7c9d7121afa24d69c51b92faf37d4e483ca9cb2c8";
const LOCAL: UrlPolicy = UrlPolicy { allow_loopback: true };
const AWS: UrlPolicy = UrlPolicy { allow_loopback: false };

struct Server {
    port: u16,
    /// Connections accepted: 0 proves a refusal happened before connecting.
    accepted: Arc<AtomicUsize>,
    /// Each request's head and body, as received.
    requests: Arc<Mutex<Vec<String>>>,
}

/// Serves `answer` (raw HTTP) to every request, or never answers when `None`.
async fn serve(answer: Option<&'static str>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let (count, seen) = (accepted.clone(), requests.clone());
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            let seen = seen.clone();
            tokio::spawn(async move {
                let request = read_request(&mut stream).await;
                seen.lock().unwrap().push(request);
                match answer {
                    Some(answer) => stream.write_all(answer.as_bytes()).await.unwrap(),
                    None => std::future::pending().await,
                }
            });
        }
    });
    Server {
        port,
        accepted,
        requests,
    }
}

/// One request: the head, then `Content-Length` bytes of body.
async fn read_request(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0_u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await.unwrap();
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|line| {
                    line.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(str::to_owned)
                })
                .map_or(0, |v| v.trim().parse::<usize>().unwrap());
            if n == 0 || buf.len() >= end + 4 + length {
                return text;
            }
        } else if n == 0 {
            return text;
        }
    }
}

fn transport(policy: UrlPolicy) -> HttpWebhookTransport {
    HttpWebhookTransport::new(policy, Duration::from_millis(500)).unwrap()
}

#[tokio::test]
async fn delivers_signed_json_when_loopback_is_allowed() {
    let server = serve(Some("HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")).await;
    let url = format!("http://127.0.0.1:{}/hook?token=t", server.port);
    assert_eq!(transport(LOCAL).post(&url, BODY, SIGNATURE).await, Ok(()));
    let requests = server.requests.lock().unwrap();
    let request = requests[0].to_ascii_lowercase();
    assert!(request.starts_with("post /hook?token=t http/1.1\r\n"), "{request}");
    assert!(
        request.contains(&format!("\r\nx-fcfs-signature: {SIGNATURE}\r\n")),
        "{request}"
    );
    assert!(request.contains("\r\ncontent-type: application/json\r\n"), "{request}");
    assert!(
        request.contains("\r\nuser-agent: fcfs-coupons-webhooks/1\r\n"),
        "{request}"
    );
    assert!(requests[0].ends_with(&format!("\r\n\r\n{BODY}")), "{}", requests[0]);
}

#[tokio::test]
async fn a_host_name_goes_through_the_resolver_which_allows_loopback_locally() {
    let server = serve(Some("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")).await;
    let url = format!("http://localhost:{}/", server.port);
    assert_eq!(transport(LOCAL).post(&url, BODY, SIGNATURE).await, Ok(()));
    assert_eq!(server.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn loopback_is_refused_on_aws_without_connecting() {
    let server = serve(Some("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")).await;
    let aws = transport(AWS);
    let port = server.port;
    for url in [
        format!("http://127.0.0.1:{port}/"),
        format!("http://localhost:{port}/"),
        format!("https://127.0.0.1:{port}/"),
        format!("https://[::ffff:127.0.0.1]:{port}/"),
        format!("https://2130706433:{port}/"),
    ] {
        let refused = aws.post(&url, BODY, SIGNATURE).await;
        assert!(
            matches!(refused, Err(DeliveryFailure::Refused(_))),
            "{url}: {refused:?}"
        );
    }
    // https with a name passes the URL check: the resolver is what refuses it.
    let by_resolver = aws.post(&format!("https://localhost:{port}/"), BODY, SIGNATURE).await;
    assert_eq!(
        by_resolver,
        Err(DeliveryFailure::Refused(
            "localhost resolves to no public address".into()
        ))
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(server.accepted.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_non_2xx_answer_is_its_status() {
    let server = serve(Some("HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n")).await;
    let url = format!("http://127.0.0.1:{}/", server.port);
    assert_eq!(
        transport(LOCAL).post(&url, BODY, SIGNATURE).await,
        Err(DeliveryFailure::Status(500))
    );
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let server = serve(Some(
        "HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/latest/meta-data/\r\nContent-Length: 0\r\n\r\n",
    ))
    .await;
    let url = format!("http://127.0.0.1:{}/", server.port);
    assert_eq!(
        transport(LOCAL).post(&url, BODY, SIGNATURE).await,
        Err(DeliveryFailure::Status(302))
    );
    assert_eq!(server.requests.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn an_endpoint_that_never_answers_times_out_at_the_deadline() {
    let server = serve(None).await;
    let url = format!("http://127.0.0.1:{}/", server.port);
    let started = Instant::now();
    assert_eq!(
        transport(LOCAL).post(&url, BODY, SIGNATURE).await,
        Err(DeliveryFailure::Timeout)
    );
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(450) && elapsed < Duration::from_secs(2),
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn a_refused_connection_is_described_without_the_query() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/hook?token=hunter2");
    match transport(LOCAL).post(&url, BODY, SIGNATURE).await {
        Err(DeliveryFailure::Connect(text)) => {
            assert!(!text.contains("hunter2") && !text.contains("127.0.0.1"), "{text}");
            assert!(text.to_ascii_lowercase().contains("refused"), "{text}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn registration_refuses_a_host_that_resolves_to_a_refused_address() {
    let check = |policy, raw: &str| {
        let url = policy_url(policy, raw);
        async move { check_resolves(&policy, &url).await }
    };
    assert!(matches!(
        check(AWS, "https://localhost/").await,
        Err(UrlRefusal::NotPublic(_))
    ));
    assert_eq!(check(LOCAL, "http://localhost:8080/").await, Ok(()));
    assert_eq!(check(LOCAL, "http://127.0.0.1:8080/").await, Ok(()));
    assert_eq!(check(AWS, "https://8.8.8.8/").await, Ok(()));
    let started = Instant::now();
    assert_eq!(
        check(AWS, "https://no-such-host.invalid/").await,
        Err(UrlRefusal::DoesNotResolve)
    );
    assert!(started.elapsed() < RESOLVE_DEADLINE + Duration::from_millis(500));
}

fn policy_url(policy: UrlPolicy, raw: &str) -> CheckedUrl {
    policy.check_url(raw).unwrap()
}

#[tokio::test]
async fn the_resolver_keeps_only_allowed_addresses() {
    let local = allowed_addrs(LOCAL, "localhost").await.unwrap();
    assert!(!local.is_empty() && local.iter().all(|a| a.ip().is_loopback()));
    let refused = allowed_addrs(AWS, "localhost").await.unwrap_err();
    assert!(refused.downcast_ref::<NoAllowedAddress>().is_some());
}
