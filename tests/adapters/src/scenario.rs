//! What every client/server pair must do alike, written once against
//! [`Ws`].

use tether_driver::{CloseCause, CloseCode, DataKind, Message, Received};

use crate::{close_request, connect, start_server, Adapter, Options, Ws};

/// The next data message, failing on anything else.
fn recv_message(ws: &mut dyn Ws) -> Message {
    match ws.recv_event() {
        Some(Ok(Received::Message(message))) => message,
        other => panic!("expected a message, got {other:?}"),
    }
}

fn echo(ws: &mut dyn Ws, message: Message) {
    ws.send(message.clone()).unwrap();
    let back = recv_message(ws);
    assert_eq!(back.len(), message.len());
    assert!(
        back == message,
        "the echo differs from what was sent ({} bytes)",
        message.len()
    );
}

/// A payload whose every byte depends on its position.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(31) ^ (i >> 11)) as u8).collect()
}

/// Every message kind, the close started by the client, and the close
/// started by the server, between `client` and `server` adapters.
pub fn run(client: Adapter, server: Adapter, options: Options) {
    let echo_server = start_server(server, options);

    // 1. Messages, pings, and the close from the client.
    let mut ws = connect(client, &echo_server, options);
    let ws = ws.as_mut();
    let extensions = ws.extensions();
    assert_eq!(
        extensions.iter().any(|e| e == "permessage-deflate"),
        options.deflate,
        "negotiated extensions: {extensions:?}"
    );
    echo(ws, Message::Text("hello".into()));
    echo(ws, Message::Text("héllo wörld ✓ 日本語 🚀".into()));
    echo(ws, Message::Text("".into()));
    echo(ws, Message::Binary(pattern(1024).into()));
    // A fragmented text message, split inside a code point.
    let check = "fragmented ✓";
    let (a, b) = check.as_bytes().split_at(check.len() - 2);
    ws.send_fragment(DataKind::Text, &a[..4], false).unwrap();
    ws.send_fragment(DataKind::Text, &a[4..], false).unwrap();
    ws.send_fragment(DataKind::Text, b, true).unwrap();
    assert_eq!(recv_message(ws), Message::Text(check.into()));
    // Several MiB each way.
    echo(ws, Message::Binary(pattern(4 << 20).into()));
    let text: String = "0123456789abcdef✓".repeat(3 << 16);
    echo(ws, Message::Text(text.into()));
    // A ping is answered with its payload.
    ws.ping(b"are you there").unwrap();
    match ws.recv_event() {
        Some(Ok(Received::Pong(payload))) => assert_eq!(&payload[..], b"are you there"),
        other => panic!("expected the pong, got {other:?}"),
    }
    ws.close(CloseCode::from(4000), "client bye").unwrap();
    // The server echoed the code and the reason (the default close reply).
    let closed = ws.close_info().expect("closed");
    assert_eq!(
        (closed.code, closed.reason.as_str(), closed.cause),
        (CloseCode::from(4000), "client bye", CloseCause::Local)
    );
    let end = echo_server.next_end();
    assert!(end.error.is_none(), "server: {end:?}");
    let closed = end.closed.expect("the server saw the close");
    assert_eq!(
        (closed.code, closed.reason.as_str(), closed.cause),
        (CloseCode::from(4000), "client bye", CloseCause::Remote)
    );

    // 2. The close from the server, with its code and reason.
    let mut ws = connect(client, &echo_server, options);
    let ws = ws.as_mut();
    echo(ws, Message::Text("before the close".into()));
    ws.send(close_request(4001, "server bye")).unwrap();
    assert!(ws.recv_event().is_none(), "a clean close ends the stream");
    let closed = ws.close_info().expect("closed");
    assert_eq!(
        (closed.code, closed.reason.as_str(), closed.cause),
        (CloseCode::from(4001), "server bye", CloseCause::Remote)
    );
    let end = echo_server.next_end();
    assert!(end.error.is_none(), "server: {end:?}");
    // The client echoed the code and the reason.
    let closed = end.closed.expect("the server closed");
    assert_eq!(
        (closed.code, closed.reason.as_str(), closed.cause),
        (CloseCode::from(4001), "server bye", CloseCause::Local)
    );
}
