//! The `tether` command against Python `websockets` (the venv of
//! `scripts/test`): `tether connect` piped to a Python echo server, a Python
//! client on `tether serve`, each way with permessage-deflate; and the
//! README's first command, run as written.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use tether_interop::cli::{build_tether, cargo, listening_on, repository, start_serve};
use tether_interop::peer::python;
use tether_interop::process::Process;
use tokio::process::Command;

const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// A Python `websockets` echo server on port 0: prints "READY <port>".
const PYTHON_ECHO_SERVER: &str = r#"
import asyncio
from websockets.asyncio.server import serve

async def echo(ws):
    async for message in ws:
        await ws.send(message)

async def main():
    async with serve(echo, "127.0.0.1", 0, max_size=None) as server:
        print("READY", server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Future()

asyncio.run(main())
"#;

/// A Python `websockets` client: text, binary and a close with a code;
/// prints "OK <code> <reason>" with what the server answered.
const PYTHON_CLIENT: &str = r#"
import asyncio, sys
from websockets.asyncio.client import connect

async def main():
    async with connect(sys.argv[1], compression="deflate") as ws:
        assert ws.response.headers.get("Sec-WebSocket-Extensions", "").startswith("permessage-deflate"), ws.response.headers
        for message in ["héllo from python", b"\x00\x01\xfe\xff" * 5000]:
            await ws.send(message)
            echo = await asyncio.wait_for(ws.recv(), 30)
            assert echo == message, (echo[:40], message[:40])
        await ws.close(4006, "from python")
        print("OK", ws.protocol.close_rcvd.code, ws.protocol.close_rcvd.reason, flush=True)

asyncio.run(main())
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tether_connect_to_a_python_server() {
    let mut command = Command::new(python());
    command.args(["-c", PYTHON_ECHO_SERVER]);
    let mut server = Process::spawn("python echo server", command);
    let port = server
        .stdout_line("READY ", STEP_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let dir = std::env::temp_dir().join(format!("tether-interop-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (file_in, file_out) = (dir.join("in.bin"), dir.join("out.bin"));
    let _ = std::fs::remove_file(&file_out);
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(&file_in, &data).unwrap();

    let tether = build_tether().await;
    let mut child = std::process::Command::new(tether)
        .args([
            "connect",
            &format!("ws://127.0.0.1:{port}/"),
            "--compression",
            "--binary-out",
        ])
        .arg(&file_out)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let input = format!("hello python\n/binary {}\n/ping p\nlast line\n", file_in.display());
    stdin.write_all(input.as_bytes()).unwrap();
    // A script waits for the echoes before it closes: a server that got
    // the close first would rightly send nothing more (RFC 6455 5.5.1).
    for expected in ["hello python", "last line"] {
        let line = lines.recv_timeout(STEP_TIMEOUT).unwrap_or_else(|_| {
            let _ = std::process::Command::new("kill").arg(pid.to_string()).status();
            panic!("no {expected:?} from tether connect");
        });
        assert_eq!(line, expected);
    }
    stdin.write_all(b"/close 4005 done\n").unwrap();
    drop(stdin);
    let output = tokio::time::timeout(
        STEP_TIMEOUT,
        tokio::task::spawn_blocking(move || child.wait_with_output()),
    )
    .await
    .unwrap_or_else(|_| {
        let _ = std::process::Command::new("kill").arg(pid.to_string()).status();
        panic!("tether connect did not finish");
    })
    .unwrap()
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}\n{}", server.transcript());
    assert!(lines.try_recv().is_err(), "nothing more on stdout");
    assert!(stderr.contains("extensions: permessage-deflate"), "{stderr}");
    assert!(
        stderr.contains("pong \"p\"") && stderr.contains("closed (4005 \"done\")"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&file_out).unwrap(), data);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_client_on_tether_serve() {
    let (mut server, addr) = start_serve(&["--compression"]).await;
    let mut command = Command::new(python());
    command.args(["-c", PYTHON_CLIENT, &format!("ws://{addr}/ws")]);
    let mut client = Process::spawn("python client", command);
    let ok = client
        .stdout_line("OK ", STEP_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // The server echoes the client's close code and reason.
    assert_eq!(ok, "4006 from python");
    let status = client.wait(STEP_TIMEOUT).await.unwrap();
    assert!(status.success(), "{}", client.transcript());
    let line = server
        .stderr_line("connection closed", STEP_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for part in ["close_code=4006", "from python", "permessage-deflate", "messages_in=2"] {
        assert!(line.contains(part), "{line}");
    }
}

/// The README's "Run the echo app" command, exactly as written, from the
/// repository's root: it builds, listens on 127.0.0.1:8080 and serves the
/// page and the echo endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_first_command_runs_as_written() {
    let readme = std::fs::read_to_string(repository().join("README.md")).unwrap();
    let section = readme
        .split("## Run the echo app")
        .nth(1)
        .expect("the README has a Run the echo app section");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .unwrap();
    let line = block.lines().next().unwrap().trim();
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words.first(), Some(&"cargo"), "{line}");
    // cargo from PATH, as a user's shell finds it (the one running this test
    // when PATH has none).
    let program = if std::process::Command::new("cargo").arg("--version").output().is_ok() {
        "cargo".to_owned()
    } else {
        env!("CARGO").to_owned()
    };
    let mut command = cargo(&program);
    command.args(&words[1..]);
    if std::net::TcpStream::connect("127.0.0.1:8080").is_ok() {
        panic!("127.0.0.1:8080 is in use: the README's command needs it free");
    }
    let mut app = Process::spawn(line, command);
    // The first build may take a while.
    let addr = listening_on(&mut app, Duration::from_secs(900)).await;
    assert_eq!(addr, "127.0.0.1:8080".parse().unwrap());
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(STEP_TIMEOUT, tcp.read_to_end(&mut response))
        .await
        .unwrap()
        .unwrap();
    let response = String::from_utf8_lossy(&response);
    assert!(
        response.starts_with("HTTP/1.1 200 ") && response.contains("Communication Log"),
        "{response}"
    );
    let mut ws = tether_tokio::connect("ws://127.0.0.1:8080/ws").await.unwrap();
    ws.send(tether_tokio::Message::Text("readme".into())).await.unwrap();
    assert_eq!(
        ws.recv().await.unwrap().unwrap(),
        tether_tokio::Message::Text("readme".into())
    );
    ws.close(tether_tokio::CloseCode::NORMAL, "").await.unwrap();
    // Dropping `app` kills its process group (cargo and the server).
}
