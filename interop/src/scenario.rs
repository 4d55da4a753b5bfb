//! The scenarios, tether's side. The peers' sides are `scenario_*` in
//! `interop/python/peer.py` and `SCENARIOS` in `interop/node/peer.mjs`;
//! each side checks what it receives.

use bytes::Bytes;
use tether_driver::{CloseCause, CloseCode, DataKind, Message, Received, Runtime, RuntimeIo, WebSocketStream};

use crate::data;
use crate::wire::Counters;

/// A script both sides follow. Unless said otherwise, tether ends it with a
/// close (1000, "done") that the peer checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// tether sends [`data::texts`], the peer checks and echoes each; then
    /// the peer sends them and tether checks and echoes.
    Text,
    /// The same with [`data::bins`].
    Binary,
    /// The same with a text message in four fragments cut inside characters
    /// and a binary one in four fragments (one empty), each way.
    Fragmented,
    /// The same with a 16 MiB binary message from tether and a 16 MiB text
    /// message from the peer.
    Large,
    /// tether pings ("tether-ping") and gets its pong; the peer checks it saw
    /// the ping, pings ("peer-ping") and gets its pong; tether checks it saw
    /// the ping.
    Ping,
    /// After an echo, tether closes with (4001, "tether says bye ✓"); the
    /// peer checks both, and tether sees the peer's answer.
    CloseTether,
    /// After an echo, the peer closes with (4002, "peer says bye ✓"); tether
    /// checks both, and the peer sees tether's answer (4002).
    ClosePeer,
    /// The client offers chat.v1, chat.v2 and superchat; the server picks
    /// chat.v2; both check, then one echo.
    Subprotocol,
    /// permessage-deflate must be on: [`data::deflate_messages`] and a
    /// fragmented text each way; tether measures each message on the wire.
    Deflate,
}

/// Subprotocols the client offers in [`Scenario::Subprotocol`].
pub const OFFERED: [&str; 3] = ["chat.v1", "chat.v2", "superchat"];
/// The one the server picks.
pub const PICKED: &str = "chat.v2";

/// What tether measured.
#[derive(Debug, Default)]
pub struct Outcome {
    /// (payload length, bytes on the wire) of each message of
    /// [`data::deflate_messages`] that tether sent.
    pub tether_sent: Vec<(usize, u64)>,
    /// The same for the peer's echoes of them.
    pub peer_sent: Vec<(usize, u64)>,
}

impl Scenario {
    /// All of them.
    pub const ALL: [Self; 9] = [
        Self::Text,
        Self::Binary,
        Self::Fragmented,
        Self::Large,
        Self::Ping,
        Self::CloseTether,
        Self::ClosePeer,
        Self::Subprotocol,
        Self::Deflate,
    ];

    /// The name in the `scenario=` query parameter.
    pub fn name(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Binary => "binary",
            Self::Fragmented => "fragmented",
            Self::Large => "large",
            Self::Ping => "ping",
            Self::CloseTether => "close-tether",
            Self::ClosePeer => "close-peer",
            Self::Subprotocol => "subprotocol",
            Self::Deflate => "deflate",
        }
    }

    /// The scenario named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// tether's side of the scenario on an open connection.
    pub async fn run<S, R: RuntimeIo<S>>(
        self,
        ws: &mut WebSocketStream<S, R>,
        counters: &Counters,
    ) -> Result<Outcome, String> {
        let mut outcome = Outcome::default();
        match self {
            Self::Text => exchange(ws, &data::texts()).await?,
            Self::Binary => exchange(ws, &data::bins()).await?,
            Self::Fragmented => {
                send_fragments(ws, DataKind::Text, &data::utf8_pieces()).await?;
                expect(ws, &Message::Text(data::UTF8.into()), "echo of the fragmented text").await?;
                let pieces = data::bin_pieces();
                let pieces: Vec<&[u8]> = pieces.iter().map(Vec::as_slice).collect();
                send_fragments(ws, DataKind::Binary, &pieces).await?;
                let whole = Message::Binary(pieces.concat().into());
                expect(ws, &whole, "echo of the fragmented binary").await?;
                tether_echoes(ws, &[Message::Text(data::UTF8.into()), whole]).await?;
            }
            Self::Large => {
                tether_sends(ws, &[Message::Binary(data::binpat(data::LARGE).into())]).await?;
                tether_echoes(ws, &[Message::Text(data::lines(data::LARGE).into())]).await?;
            }
            Self::Ping => ping(ws).await?,
            Self::CloseTether => {
                tether_sends(ws, &[Message::Text("hi".into())]).await?;
                let reason = "tether says bye ✓";
                ws.close(CloseCode::from(4001), reason)
                    .await
                    .map_err(|e| format!("close: {e}"))?;
                check_closed(ws, 4001, Some(reason), CloseCause::Local)?;
                return Ok(outcome);
            }
            Self::ClosePeer => {
                tether_sends(ws, &[Message::Text("hi".into())]).await?;
                match ws.recv().await {
                    None => {}
                    Some(Ok(m)) => return Err(format!("expected the peer's close, got {}", describe(&m))),
                    Some(Err(e)) => return Err(format!("expected the peer's close, got an error: {e}")),
                }
                check_closed(ws, 4002, Some("peer says bye ✓"), CloseCause::Remote)?;
                return Ok(outcome);
            }
            Self::Subprotocol => {
                if ws.subprotocol() != Some(PICKED) {
                    return Err(format!("expected subprotocol {PICKED}, got {:?}", ws.subprotocol()));
                }
                tether_sends(ws, &[Message::Text("hi".into())]).await?;
            }
            Self::Deflate => {
                let extensions: Vec<&str> = ws.extensions().collect();
                if extensions != ["permessage-deflate"] {
                    return Err(format!("permessage-deflate not negotiated: extensions {extensions:?}"));
                }
                for message in data::deflate_messages() {
                    let (written, read) = counters.wire(&ws.stats());
                    send(ws, message.clone()).await?;
                    let sent = counters.wire(&ws.stats()).0 - written;
                    expect(ws, &message, "echo").await?;
                    let received = counters.wire(&ws.stats()).1 - read;
                    outcome.tether_sent.push((message.len(), sent));
                    outcome.peer_sent.push((message.len(), received));
                }
                send_fragments(ws, DataKind::Text, &data::utf8_pieces()).await?;
                expect(ws, &Message::Text(data::UTF8.into()), "echo of the fragmented text").await?;
                tether_echoes(ws, &data::deflate_messages()).await?;
                tether_echoes(ws, &[Message::Text(data::UTF8.into())]).await?;
            }
        }
        ws.close(CloseCode::NORMAL, "done")
            .await
            .map_err(|e| format!("close: {e}"))?;
        check_closed(ws, 1000, Some("done"), CloseCause::Local)?;
        Ok(outcome)
    }
}

/// tether sends, the peer echoes; then the peer sends, tether echoes.
async fn exchange<S, R: RuntimeIo<S>>(ws: &mut WebSocketStream<S, R>, messages: &[Message]) -> Result<(), String> {
    tether_sends(ws, messages).await?;
    tether_echoes(ws, messages).await
}

/// tether sends each message and checks the peer's echo.
async fn tether_sends<S, R: RuntimeIo<S>>(ws: &mut WebSocketStream<S, R>, messages: &[Message]) -> Result<(), String> {
    for (i, message) in messages.iter().enumerate() {
        send(ws, message.clone()).await?;
        expect(ws, message, &format!("echo {i} from the peer")).await?;
    }
    Ok(())
}

/// The peer sends each message; tether checks it and echoes it.
async fn tether_echoes<S, R: RuntimeIo<S>>(ws: &mut WebSocketStream<S, R>, messages: &[Message]) -> Result<(), String> {
    for (i, message) in messages.iter().enumerate() {
        expect(ws, message, &format!("message {i} from the peer")).await?;
        send(ws, message.clone()).await?;
    }
    Ok(())
}

async fn send<S, R: RuntimeIo<S>>(ws: &mut WebSocketStream<S, R>, message: Message) -> Result<(), String> {
    let what = describe(&message);
    ws.send(message).await.map_err(|e| format!("sending {what}: {e}"))
}

async fn send_fragments<S, R: RuntimeIo<S>>(
    ws: &mut WebSocketStream<S, R>,
    kind: DataKind,
    pieces: &[&[u8]],
) -> Result<(), String> {
    for (i, piece) in pieces.iter().enumerate() {
        ws.send_fragment(kind, piece, i + 1 == pieces.len())
            .await
            .map_err(|e| format!("sending fragment {i} of a {kind:?} message: {e}"))?;
    }
    Ok(())
}

async fn expect<S, R: RuntimeIo<S>>(
    ws: &mut WebSocketStream<S, R>,
    expected: &Message,
    what: &str,
) -> Result<(), String> {
    match ws.recv().await {
        Some(Ok(got)) if got == *expected => Ok(()),
        Some(Ok(got)) => Err(format!(
            "{what}: expected {}, got {}",
            describe(expected),
            describe(&got)
        )),
        Some(Err(e)) => Err(format!("{what}: expected {}, got an error: {e}", describe(expected))),
        None => Err(format!(
            "{what}: expected {}, the connection closed: {:?}",
            describe(expected),
            ws.close_info()
        )),
    }
}

async fn ping<S, R: RuntimeIo<S>>(ws: &mut WebSocketStream<S, R>) -> Result<(), String> {
    ws.ping(Bytes::from_static(b"tether-ping"))
        .await
        .map_err(|e| format!("ping: {e}"))?;
    match ws.recv_event().await {
        Some(Ok(Received::Pong(payload))) if payload == "tether-ping" => {}
        other => return Err(format!("expected the pong \"tether-ping\", got {other:?}")),
    }
    send(ws, Message::Text("got pong".into())).await?;
    match ws.recv_event().await {
        Some(Ok(Received::Ping(payload))) if payload == "peer-ping" => {}
        other => return Err(format!("expected the ping \"peer-ping\", got {other:?}")),
    }
    match ws.recv_event().await {
        Some(Ok(Received::Message(m))) if m == Message::Text("got pong too".into()) => Ok(()),
        other => Err(format!("expected the text \"got pong too\", got {other:?}")),
    }
}

fn check_closed<S, R: Runtime>(
    ws: &WebSocketStream<S, R>,
    code: u16,
    reason: Option<&str>,
    cause: CloseCause,
) -> Result<(), String> {
    let Some(closed) = ws.close_info() else {
        return Err("the connection is not closed".to_owned());
    };
    if closed.code != CloseCode::from(code) || reason.is_some_and(|r| r != closed.reason) || closed.cause != cause {
        return Err(format!(
            "expected close {code} {reason:?} ({cause:?}), got {} {:?} ({:?})",
            closed.code, closed.reason, closed.cause
        ));
    }
    Ok(())
}

/// A message, shortened.
pub fn describe(message: &Message) -> String {
    let bytes = message.as_bytes();
    let shown = &bytes[..bytes.len().min(40)];
    let more = if bytes.len() > 40 { "..." } else { "" };
    match message {
        Message::Text(_) => format!("text of {} ({:?}{more})", bytes.len(), String::from_utf8_lossy(shown)),
        Message::Binary(_) => format!("binary of {} ({shown:02x?}{more})", bytes.len()),
    }
}
