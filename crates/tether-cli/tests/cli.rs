//! The `tether` command end to end, as a user runs it: `tether serve` and
//! `tether connect` through pipes (text, a binary file, ping, close with a
//! code and reason), the exit statuses and their one-line messages, TLS
//! with a certificate file and with a self-signed one, Origins, a server
//! that closes with its own code, and `tether bench` against `tether serve`.
//! Python `websockets`, Chromium and the README's command are in
//! `interop/tests/cli.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const TETHER: &str = env!("CARGO_BIN_EXE_tether");

/// A running `tether serve`, stopped by its process id when dropped; its
/// stderr (the log) is collected as it comes.
struct Serve {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(TETHER)
            .args(["serve", "--bind", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let lines = log.clone();
        thread::spawn(move || {
            for line in stderr.lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix("echo app on ") {
                    let addr = rest.split("://").nth(1).and_then(|r| r.split('/').next()).unwrap_or("");
                    let _ = addr_tx.send(addr.parse::<SocketAddr>().unwrap());
                }
                lines.lock().unwrap().push(line);
            }
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("tether serve prints its address");
        Self { child, addr, log }
    }

    fn url(&self, scheme: &str) -> String {
        format!("{scheme}://{}/ws", self.addr)
    }

    /// Waits (up to 10 s) for a log line containing every one of `parts`.
    fn wait_log(&self, parts: &[&str]) -> String {
        let start = Instant::now();
        loop {
            if let Some(line) = self
                .log
                .lock()
                .unwrap()
                .iter()
                .find(|line| parts.iter().all(|p| line.contains(p)))
            {
                return line.clone();
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "no log line with {parts:?}: {:?}",
                self.log.lock().unwrap()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Runs `tether ARGS` with `input` on stdin, within 60 seconds.
fn tether(args: &[&str], input: &str) -> Output {
    let mut child = Command::new(TETHER)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_owned();
    let writer = thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let pid = child.id();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let waiter = thread::spawn(move || {
        let output = child.wait_with_output().unwrap();
        let _ = done_tx.send(());
        output
    });
    if done_rx.recv_timeout(Duration::from_secs(60)).is_err() {
        // Stop it by its process id; the assertion below reports it.
        let _ = Command::new("kill").arg(pid.to_string()).status();
        panic!("tether {args:?} did not finish in 60 s");
    }
    writer.join().unwrap();
    waiter.join().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tether-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn serve_and_connect_through_pipes() {
    let server = Serve::start(&[]);
    let dir = temp("pipes");
    let binary_in = dir.join("in.bin");
    let binary_out = dir.join("out.bin");
    let _ = std::fs::remove_file(&binary_out);
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 256) as u8).collect();
    std::fs::write(&binary_in, &data).unwrap();
    let input = format!(
        "hello\n/binary {}\n/ping abc\nhéllo wörld 🎉\n//not a command\n/close 4001 bye now\n",
        binary_in.display()
    );
    let out = tether(
        &[
            "connect",
            &server.url("ws"),
            "--binary-out",
            binary_out.to_str().unwrap(),
        ],
        &input,
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "stdout: {stdout}\nstderr: {stderr}");
    // One received message per line, in order.
    assert_eq!(stdout, "hello\nhéllo wörld 🎉\n/not a command\n", "stderr: {stderr}");
    assert_eq!(std::fs::read(&binary_out).unwrap(), data, "the binary echo");
    assert!(stderr.contains("pong \"abc\""), "{stderr}");
    assert!(stderr.contains("closed (4001 \"bye now\")"), "{stderr}");
    // The server's log line for the connection: close code and reason, bytes.
    let line = server.wait_log(&["connection closed", "close_code=4001"]);
    assert!(
        line.contains("bye now") && line.contains("HTTP/1.1") && line.contains("messages_in=4"),
        "{line}"
    );
    assert!(
        line.contains("compression=\"off\"") || line.contains("compression=off"),
        "{line}"
    );

    // Binary as hex without --binary-out; end of input closes with 1000.
    let out = tether(&["connect", &server.url("ws")], "/binary /dev/null\n");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "\n", "an empty binary message is an empty hex line");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn hex_and_compression() {
    let server = Serve::start(&["--compression"]);
    let dir = temp("hex");
    let file = dir.join("b.bin");
    std::fs::write(&file, [0u8, 1, 0xab, 0xff]).unwrap();
    let out = tether(
        &["connect", &server.url("ws"), "--compression"],
        &format!("/binary {}\n", file.display()),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "0001abff\n");
    assert!(
        text(&out.stderr).contains("permessage-deflate"),
        "{}",
        text(&out.stderr)
    );
    server.wait_log(&["connection closed", "permessage-deflate"]);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn exit_statuses_and_messages() {
    let server = Serve::start(&[]);
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let cases: [(&[&str], i32, &str); 5] = [
        (&["connect", "http://example.com/"], 2, "the scheme must be ws or wss"),
        (&["connect", &format!("ws://{closed}/")], 3, "refused"),
        (&["connect", "ws://tether-test.invalid/"], 4, "not found"),
        (
            &["connect", &format!("ws://{}/nope", server.addr)],
            6,
            "404 Not Found: Not found.",
        ),
        (
            &["connect", &server.url("ws"), "--header", "no colon"],
            2,
            "expected 'Name: value'",
        ),
    ];
    for (args, status, message) in cases {
        let out = tether(args, "");
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(status), "{args:?}: {stderr}");
        // One line, prefixed, saying what happened.
        let last = stderr.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("tether: ") && last.contains(message),
            "{args:?}: {stderr}"
        );
    }
    // Usage errors are clap's: status 2 with the usage.
    let out = tether(&["connect"], "");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("Usage"));
}

#[test]
fn help_for_every_subcommand() {
    for sub in ["serve", "connect", "bench"] {
        let out = tether(&[sub, "--help"], "");
        let help = text(&out.stdout);
        assert_eq!(out.status.code(), Some(0));
        assert!(
            help.contains("Examples:") && help.contains(&format!("tether {sub}")),
            "{help}"
        );
    }
    let help = text(&tether(&["connect", "--help"], "").stdout);
    assert!(
        help.contains("Exit status:") && help.contains("/close [code] [reason]"),
        "{help}"
    );
}

#[test]
fn tls_with_a_certificate_file_and_self_signed() {
    let dir = temp("tls");
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    let server = Serve::start(&["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()]);
    let url = format!("wss://localhost:{}/ws", server.addr.port());
    // Not trusted: a TLS error, status 5, naming the problem.
    let out = tether(&["connect", &url], "hi\n");
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).to_lowercase().contains("certificate"),
        "{}",
        text(&out.stderr)
    );
    // Trusted through --ca.
    let out = tether(&["connect", &url, "--ca", cert.to_str().unwrap()], "hi\n");
    assert_eq!(
        (out.status.code(), text(&out.stdout).as_str()),
        (Some(0), "hi\n"),
        "{}",
        text(&out.stderr)
    );

    let server = Serve::start(&["--tls-self-signed"]);
    let url = server.url("wss");
    assert!(url.starts_with("wss://127.0.0.1:"));
    let out = tether(&["connect", &url], "hi\n");
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    let out = tether(&["connect", &url, "--insecure"], "hi\n");
    assert_eq!(
        (out.status.code(), text(&out.stdout).as_str()),
        (Some(0), "hi\n"),
        "{}",
        text(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn allowed_origins() {
    let server = Serve::start(&["--allowed-origin", "https://good.example"]);
    let out = tether(&["connect", &server.url("ws"), "--origin", "https://evil.example"], "");
    assert_eq!(out.status.code(), Some(6), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("403"), "{}", text(&out.stderr));
    let out = tether(
        &["connect", &server.url("ws"), "--origin", "https://good.example"],
        "ok\n",
    );
    assert_eq!((out.status.code(), text(&out.stdout).as_str()), (Some(0), "ok\n"));
}

/// A server that closes with its own code: the exit status says so.
#[test]
fn a_server_that_closes_with_its_own_code() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    runtime.spawn(async move {
        for code in [4002u16, 1001] {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ws = tether_tokio::accept(tcp).await.unwrap();
            ws.send(tether_tokio::Message::Text("bye".into())).await.unwrap();
            let _ = ws.close(tether_tokio::CloseCode::from(code), "server says so").await;
        }
    });
    // Input stays open: the server's close ends the client.
    let mut child = Command::new(TETHER)
        .args(["connect", &format!("ws://{addr}/")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take();
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    assert_eq!(out.status.code(), Some(10), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "bye\n");
    assert!(text(&out.stderr).contains("4002") && text(&out.stderr).contains("server says so"));
    // 1001 (going away) is a normal end.
    let out = tether(&["connect", &format!("ws://{addr}/")], "");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn bench_against_serve() {
    let server = Serve::start(&[]);
    let pid = server.child.id().to_string();
    for extra in [&["--text"][..], &["--size", "4KiB", "--in-flight", "8"][..]] {
        let url = server.url("ws");
        let mut args = vec![
            "bench",
            &url,
            "--connections",
            "4",
            "--duration",
            "1500ms",
            "--server-pid",
            &pid,
        ];
        args.extend_from_slice(extra);
        let out = tether(&args, "");
        let stdout = text(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", text(&out.stderr));
        for row in [
            "connections     4",
            "messages        ",
            "bytes           ",
            "latency p50",
            "latency p90",
            "latency p99 ",
            "latency p99.9",
            "latency max",
            "errors          0",
            "server CPU      ",
        ] {
            assert!(stdout.contains(row), "{row:?} missing:\n{stdout}");
        }
        let messages: u64 = stdout
            .lines()
            .find_map(|l| l.strip_prefix("messages        "))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap();
        assert!(messages > 0, "{stdout}");
    }
    // A server that is not there: the connect error's status, not a table.
    let out = tether(&["bench", "ws://127.0.0.1:1/", "--duration", "1s"], "");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
}

/// `tether serve` over HTTP/2: TLS choosing `h2` by ALPN and cleartext
/// with prior knowledge, several WebSockets on one connection, each logged
/// with its HTTP version; HTTP/1.1 still works on the same port.
#[test]
fn serve_over_http2() {
    use tether_tokio::http2::Http2Connection;
    use tether_tokio::tls::TlsClient;
    use tether_tokio::{ClientRequest, Message};
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for tls in [true, false] {
        let server = Serve::start(if tls { &["--tls-self-signed"][..] } else { &[][..] });
        let url = server.url(if tls { "wss" } else { "ws" });
        runtime.block_on(async {
            let connection = if tls {
                Http2Connection::connect(&url, Some(TlsClient::new().dangerous_accept_any_certificate()))
                    .await
                    .unwrap()
            } else {
                let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
                Http2Connection::handshake(tcp, None).await.unwrap()
            };
            for i in 0..3 {
                let mut ws = connection.open(ClientRequest::new(&url).unwrap()).await.unwrap();
                ws.send(Message::Text(format!("h2 {i}").into())).await.unwrap();
                assert_eq!(
                    ws.recv().await.unwrap().unwrap(),
                    Message::Text(format!("h2 {i}").into())
                );
                ws.close(tether_tokio::CloseCode::NORMAL, "done").await.unwrap();
            }
        });
        let line = server.wait_log(&["connection closed", "HTTP/2", "close_reason=done"]);
        assert!(line.contains("messages_in=1"), "{line}");
        // HTTP/1.1 on the same port, through the command.
        let mut args = vec!["connect", url.as_str()];
        if tls {
            args.push("--insecure");
        }
        let out = tether(&args, "h1\n");
        assert_eq!(
            (out.status.code(), text(&out.stdout).as_str()),
            (Some(0), "h1\n"),
            "{}",
            text(&out.stderr)
        );
        server.wait_log(&["connection closed", "HTTP/1.1"]);
    }
}
