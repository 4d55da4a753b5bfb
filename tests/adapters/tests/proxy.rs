//! Every adapter's client through real proxies on loopback: tinyproxy (HTTP
//! `CONNECT`, with and without Basic credentials), stunnel in front of
//! tinyproxy (an `https://` proxy: `wss://` runs TLS inside TLS), and
//! microsocks (SOCKS5, `socks5://` and `socks5h://`, with and without a
//! user name and password); the proxy from the environment and `no_proxy`;
//! the connect timeout over the proxy's leg; a proxy's refusals as typed
//! errors.
//!
//! The proxies are Debian's packages (`tinyproxy-bin`, `stunnel4`,
//! `microsocks`), which `scripts/test` installs; each test starts its own
//! on a free loopback port and stops it by its process id.
#![allow(clippy::unwrap_used)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tether_adapter_tests::{start_server, tls, try_connect, Adapter, ClientSettings, Options, Ws};
use tether_driver::proxy::{Proxy, ProxyError};
use tether_driver::{CloseCode, Error, ErrorKind, Message, Received};

/// A proxy process, stopped by its process id when dropped, with its
/// working directory.
struct Daemon {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A program from its Debian package, or a clear failure saying how to get it.
fn program(var: &str, path: &str, package: &str) -> PathBuf {
    let path = std::env::var_os(var).map_or_else(|| PathBuf::from(path), PathBuf::from);
    assert!(
        path.exists(),
        "{} is missing: run scripts/test (it installs Debian's {package} when run as root), \
         or apt-get install {package}, or set {var}",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A port where connections are refused, held for as long as the socket
/// lives: bound and not listening, so that no other test's server can take
/// it meanwhile (a port merely found free could be, and once was: a
/// connection meant to be refused reached another test's echo server).
fn refusing_port() -> (socket2::Socket, u16) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
    let port = socket.local_addr().unwrap().as_socket().unwrap().port();
    (socket, port)
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "tether-proxy-{name}-{}-{:?}",
        std::process::id(),
        thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Starts `command` (its output to `dir/log`) and waits until `addr` takes
/// connections (at most 10 seconds).
fn spawn(mut command: Command, addr: SocketAddr, dir: PathBuf) -> Daemon {
    let log = std::fs::File::create(dir.join("log")).unwrap();
    let child = command
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut daemon = Daemon { child, addr, dir };
    let start = Instant::now();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if let Some(status) = daemon.child.try_wait().unwrap() {
            let log = std::fs::read_to_string(daemon.dir.join("log")).unwrap_or_default();
            panic!("{command:?} exited with {status}:\n{log}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{command:?} is not listening on {addr}"
        );
        thread::sleep(Duration::from_millis(20));
    }
    daemon
}

/// tinyproxy: an HTTP proxy that tunnels with `CONNECT` to any port,
/// requiring `user`/`password` (Basic) when given.
fn tinyproxy(credentials: Option<(&str, &str)>) -> Daemon {
    let bin = program("TETHER_TEST_TINYPROXY", "/usr/bin/tinyproxy", "tinyproxy-bin");
    let dir = temp_dir("tinyproxy");
    let port = free_port();
    // No ConnectPort line: CONNECT to every port (the test servers' ports
    // are random).
    let mut conf = format!(
        "Port {port}\nListen 127.0.0.1\nTimeout 30\nMaxClients 64\nAllow 127.0.0.1\nAllow ::1\nLogLevel Info\n"
    );
    if let Some((user, password)) = credentials {
        conf.push_str(&format!("BasicAuth {user} {password}\n"));
    }
    std::fs::write(dir.join("tinyproxy.conf"), conf).unwrap();
    let mut command = Command::new(bin);
    command.arg("-d").arg("-c").arg(dir.join("tinyproxy.conf"));
    spawn(command, ([127, 0, 0, 1], port).into(), dir)
}

/// stunnel: TLS with the test certificate (made for `localhost`) in front
/// of `backend`: with tinyproxy behind it, an `https://` proxy.
fn stunnel(backend: SocketAddr) -> Daemon {
    let bin = program("TETHER_TEST_STUNNEL", "/usr/bin/stunnel4", "stunnel4");
    let dir = temp_dir("stunnel");
    let port = free_port();
    let (cert, key) = tls::pem();
    std::fs::write(dir.join("cert.pem"), cert).unwrap();
    std::fs::write(dir.join("key.pem"), key).unwrap();
    let conf = format!(
        "foreground = yes\npid =\ndebug = notice\n[proxy]\naccept = 127.0.0.1:{port}\nconnect = {backend}\n\
         cert = {}\nkey = {}\n",
        dir.join("cert.pem").display(),
        dir.join("key.pem").display()
    );
    std::fs::write(dir.join("stunnel.conf"), conf).unwrap();
    let mut command = Command::new(bin);
    command.arg(dir.join("stunnel.conf"));
    spawn(command, ([127, 0, 0, 1], port).into(), dir)
}

/// microsocks: a SOCKS5 proxy, requiring `user`/`password` when given.
fn microsocks(credentials: Option<(&str, &str)>) -> Daemon {
    let bin = program("TETHER_TEST_MICROSOCKS", "/usr/bin/microsocks", "microsocks");
    let dir = temp_dir("microsocks");
    let port = free_port();
    let mut command = Command::new(bin);
    command.args(["-i", "127.0.0.1", "-p", &port.to_string()]);
    if let Some((user, password)) = credentials {
        command.args(["-u", user, "-P", password]);
    }
    spawn(command, ([127, 0, 0, 1], port).into(), dir)
}

fn settings(proxy: &str, secure: bool) -> ClientSettings {
    ClientSettings {
        proxy: Some(Proxy::new(proxy).unwrap()),
        // Trusts the test certificate: the echo server's and stunnel's.
        tls_config: secure.then(tls::client_config),
        connect_timeout: Some(Duration::from_secs(20)),
        ..ClientSettings::default()
    }
}

/// Echoes one message and closes; returns the client's TCP peer.
fn echo(mut ws: Box<dyn Ws>) -> Option<SocketAddr> {
    ws.send(Message::Text("through the proxy".into())).unwrap();
    match ws.recv_event() {
        Some(Ok(Received::Message(Message::Text(text)))) => assert_eq!(text.as_str(), "through the proxy"),
        other => panic!("expected the echo, got {other:?}"),
    }
    let peer = ws.facts().peer_addr;
    ws.close(CloseCode::NORMAL, "").unwrap();
    peer
}

/// `ws://` and `wss://` servers of `adapter`, and their URLs: by address
/// for `ws://`, as `localhost` for `wss://` (the certificate's name), which
/// the proxy resolves (or the client, for `socks5://`).
fn servers(adapter: Adapter) -> [(tether_adapter_tests::EchoServer, String, bool); 2] {
    [false, true].map(|secure| {
        let options = Options {
            tls: secure,
            ..Options::default()
        };
        let server = start_server(adapter, options);
        let url = server.url(options);
        (server, url, secure)
    })
}

fn http_connect_proxy(adapter: Adapter) {
    let proxy = tinyproxy(None);
    for (_server, url, secure) in servers(adapter) {
        let ws = try_connect(adapter, &url, settings(&format!("http://{}", proxy.addr), secure)).unwrap();
        // The client's TCP peer is the proxy: the connection went through it.
        assert_eq!(echo(ws), Some(proxy.addr), "{url}");
    }
    let log = std::fs::read_to_string(proxy.dir.join("log")).unwrap();
    assert!(log.contains("CONNECT"), "tinyproxy logged no CONNECT:\n{log}");
}

fn http_connect_proxy_with_credentials(adapter: Adapter) {
    let proxy = tinyproxy(Some(("alice", "s3cret")));
    let (_server, url, _) = servers(adapter).into_iter().next().unwrap();
    // Credentials in the proxy URL, percent-encoded (%65 is "e": tinyproxy
    // takes letters and digits only).
    let with = settings(&format!("http://alice:s3cr%65t@{}", proxy.addr), false);
    assert_eq!(echo(try_connect(adapter, &url, with).unwrap()), Some(proxy.addr));
    // Or given apart.
    let mut apart = settings(&format!("http://{}", proxy.addr), false);
    apart.proxy = apart.proxy.map(|p| p.credentials("alice", "s3cret").unwrap());
    assert_eq!(echo(try_connect(adapter, &url, apart).unwrap()), Some(proxy.addr));
    // None: 407 with the proxy's challenge. Wrong ones: tinyproxy answers
    // 401 (with the same challenge), the same kind to the client.
    for (proxy_url, expected) in [
        (format!("http://{}", proxy.addr), 407),
        (format!("http://alice:nope@{}", proxy.addr), 401),
    ] {
        let error = try_connect(adapter, &url, settings(&proxy_url, false)).err().unwrap();
        assert_eq!(error.kind(), ErrorKind::ProxyAuthenticationRequired, "{error}");
        assert!(
            matches!(&error, Error::Proxy(ProxyError::Rejected { status, .. }) if status.as_u16() == expected),
            "{error:?}"
        );
        let challenge = error.challenge().unwrap_or_default().to_ascii_lowercase();
        assert!(challenge.starts_with("basic realm="), "{challenge}");
    }
}

fn https_proxy_and_tls_inside_tls(adapter: Adapter) {
    let backend = tinyproxy(None);
    let proxy = stunnel(backend.addr);
    // The proxy's certificate is for localhost.
    let proxy_url = format!("https://localhost:{}", proxy.addr.port());
    for (_server, url, secure) in servers(adapter) {
        let mut settings = settings(&proxy_url, true);
        settings.tls_config = Some(tls::client_config());
        let ws = try_connect(adapter, &url, settings).unwrap();
        let facts = ws.facts();
        // ws://: TLS with the proxy only; wss://: TLS with the server
        // inside it. Either way the TCP peer is stunnel.
        assert!(facts.tls.is_some(), "{url}");
        assert_eq!(echo(ws), Some(proxy.addr), "{url} ({secure})");
    }
}

fn socks5_proxy(adapter: Adapter) {
    let proxy = microsocks(None);
    for (_server, url, secure) in servers(adapter) {
        for scheme in ["socks5", "socks5h"] {
            let ws = try_connect(adapter, &url, settings(&format!("{scheme}://{}", proxy.addr), secure)).unwrap();
            assert_eq!(echo(ws), Some(proxy.addr), "{scheme} {url}");
        }
    }
    // socks5h: the proxy resolves the name (`localhost` here).
    let options = Options::default();
    let server = start_server(adapter, options);
    let url = format!("ws://localhost:{}/echo", server.addr.port());
    let ws = try_connect(adapter, &url, settings(&format!("socks5h://{}", proxy.addr), false)).unwrap();
    assert_eq!(echo(ws), Some(proxy.addr));
}

fn socks5_proxy_with_credentials(adapter: Adapter) {
    let proxy = microsocks(Some(("bob", "pa ss")));
    let (_server, url, _) = servers(adapter).into_iter().next().unwrap();
    let good = settings(&format!("socks5h://bob:pa%20ss@{}", proxy.addr), false);
    assert_eq!(echo(try_connect(adapter, &url, good).unwrap()), Some(proxy.addr));
    let none = try_connect(adapter, &url, settings(&format!("socks5://{}", proxy.addr), false))
        .err()
        .unwrap();
    assert_eq!(none.kind(), ErrorKind::ProxyAuthenticationRequired, "{none}");
    assert!(
        matches!(none, Error::Proxy(ProxyError::SocksNoAcceptableMethod)),
        "{none:?}"
    );
    let wrong = try_connect(
        adapter,
        &url,
        settings(&format!("socks5://bob:x@{}", proxy.addr), false),
    )
    .err()
    .unwrap();
    assert_eq!(wrong.kind(), ErrorKind::ProxyAuthenticationRequired, "{wrong}");
    assert!(matches!(wrong, Error::Proxy(ProxyError::SocksAuthFailed)), "{wrong:?}");
}

fn proxy_from_the_environment(adapter: Adapter) {
    let proxy = tinyproxy(None);
    let (server, url, _) = servers(adapter).into_iter().next().unwrap();
    let env = |vars: &[(&str, String)]| ClientSettings {
        proxy_env: Some(vars.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()),
        connect_timeout: Some(Duration::from_secs(20)),
        ..ClientSettings::default()
    };
    let proxy_url = format!("http://{}", proxy.addr);
    // ws:// takes http_proxy.
    let ws = try_connect(adapter, &url, env(&[("http_proxy", proxy_url.clone())])).unwrap();
    assert_eq!(echo(ws), Some(proxy.addr));
    // no_proxy names the server: direct.
    let direct = env(&[
        ("http_proxy", proxy_url.clone()),
        ("no_proxy", "localhost,127.0.0.0/8".into()),
    ]);
    assert_eq!(echo(try_connect(adapter, &url, direct).unwrap()), Some(server.addr));
    // ws_proxy wins over http_proxy (which points nowhere here).
    let (_held, dead) = refusing_port();
    let dead = format!("http://127.0.0.1:{dead}");
    let both = env(&[("http_proxy", dead), ("WS_PROXY", proxy_url)]);
    assert_eq!(echo(try_connect(adapter, &url, both).unwrap()), Some(proxy.addr));
    // Not opted in: the environment is not read (the builder's default).
    assert_eq!(
        echo(try_connect(adapter, &url, ClientSettings::default()).unwrap()),
        Some(server.addr)
    );
}

fn the_connect_timeout_covers_the_proxy(adapter: Adapter) {
    // A "proxy" that accepts the connection and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let held = thread::spawn(move || {
        let accepted = silent.accept();
        thread::sleep(Duration::from_secs(3));
        drop(accepted);
    });
    for scheme in ["http", "socks5h"] {
        let mut settings = settings(&format!("{scheme}://{addr}"), false);
        settings.connect_timeout = Some(Duration::from_millis(400));
        let start = Instant::now();
        let error = try_connect(adapter, "ws://127.0.0.1:9/", settings).err().unwrap();
        assert_eq!(error.kind(), ErrorKind::ConnectTimeout, "{scheme}: {error}");
        // (The listener accepted the first attempt; the second waits in
        // its backlog: connected, never answered, the same to the client.)
        assert!(start.elapsed() < Duration::from_secs(3), "{:?}", start.elapsed());
    }
    held.join().unwrap();
}

fn a_proxy_that_cannot_reach_the_server(adapter: Adapter) {
    let (_held, closed) = refusing_port();
    let url = format!("ws://127.0.0.1:{closed}/");
    let http = tinyproxy(None);
    let error = try_connect(adapter, &url, settings(&format!("http://{}", http.addr), false))
        .err()
        .unwrap();
    assert_eq!(error.kind(), ErrorKind::Proxy, "{error}");
    assert!(
        matches!(&error, Error::Proxy(ProxyError::Rejected { status, .. }) if status.is_server_error()),
        "{error:?}"
    );
    let socks = microsocks(None);
    let error = try_connect(adapter, &url, settings(&format!("socks5://{}", socks.addr), false))
        .err()
        .unwrap();
    assert_eq!(error.kind(), ErrorKind::Proxy, "{error}");
    assert!(matches!(error, Error::Proxy(ProxyError::SocksReply(_))), "{error:?}");
}

fn a_proxy_that_is_not_there(adapter: Adapter) {
    let url = "ws://127.0.0.1:9/";
    let (_held, proxy) = refusing_port();
    let error = try_connect(adapter, url, settings(&format!("http://127.0.0.1:{proxy}"), false))
        .err()
        .unwrap();
    assert_eq!(error.kind(), ErrorKind::ConnectionRefused, "{error}");
    let error = try_connect(adapter, url, settings("socks5://proxy.invalid:1080", false))
        .err()
        .unwrap();
    assert_eq!(error.kind(), ErrorKind::HostNotFound, "{error}");
    assert!(error.to_string().contains("proxy.invalid"), "{error}");
}

tether_adapter_tests::every_adapter!(
    http_connect_proxy,
    http_connect_proxy_with_credentials,
    https_proxy_and_tls_inside_tls,
    socks5_proxy,
    socks5_proxy_with_credentials,
    proxy_from_the_environment,
    the_connect_timeout_covers_the_proxy,
    a_proxy_that_cannot_reach_the_server,
    a_proxy_that_is_not_there,
);

#[test]
fn the_proxies_are_the_debian_packages() {
    for (var, path, package) in [
        ("TETHER_TEST_TINYPROXY", "/usr/bin/tinyproxy", "tinyproxy-bin"),
        ("TETHER_TEST_STUNNEL", "/usr/bin/stunnel4", "stunnel4"),
        ("TETHER_TEST_MICROSOCKS", "/usr/bin/microsocks", "microsocks"),
    ] {
        assert!(Path::new(&program(var, path, package)).exists());
    }
}

/// The blocking client's two-thread split decrypts TLS inside TLS: the
/// reader thread reads the raw socket and both sessions decode it.
#[test]
fn blocking_split_inside_tls_inside_tls() {
    let backend = tinyproxy(None);
    let proxy = stunnel(backend.addr);
    let options = Options {
        tls: true,
        ..Options::default()
    };
    let server = start_server(Adapter::Blocking, options);
    let ws = tether_blocking::ClientBuilder::new(&server.url(options))
        .tls_config(tls::client_config())
        .proxy(Proxy::new(&format!("https://localhost:{}", proxy.addr.port())).unwrap())
        .connect_timeout(Some(Duration::from_secs(20)))
        .connect()
        .unwrap();
    assert!(matches!(ws.get_ref(), tether_blocking::MaybeTlsStream::TlsInTls(_)));
    let (mut reader, writer) = ws.split().unwrap();
    let messages: Vec<String> = (0..50).map(|i| format!("{i} {}", "x".repeat(i * 300))).collect();
    let sent = messages.clone();
    let sender = thread::spawn(move || {
        for message in sent {
            writer.send(Message::Text(message.into())).unwrap();
        }
        writer
    });
    for expected in &messages {
        match reader.recv() {
            Some(Ok(Message::Text(text))) => assert_eq!(text.as_str(), expected),
            other => panic!("expected an echo, got {other:?}"),
        }
    }
    let writer = sender.join().unwrap();
    writer.close(CloseCode::NORMAL, "done").unwrap();
}
