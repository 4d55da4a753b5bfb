//! The Autobahn testees' echo: what the fuzzing peer sends comes back, and
//! the close handshake is finished whatever ended the echo.

use tether_compio::WebSocketStream;

/// Echoes every message (queued with `feed`, written by the next `recv`)
/// until the connection ends.
pub(crate) async fn echo<S>(mut ws: WebSocketStream<S>)
where
    tether_compio::Compio: tether_driver::RuntimeIo<S>,
{
    let mut echoing = true;
    while let Some(received) = ws.recv().await {
        // After a failed feed or a failed connection, only drain to the end.
        echoing = echoing
            && match received {
                Ok(message) => ws.feed(message).await.is_ok(),
                Err(_) => false,
            };
    }
}
