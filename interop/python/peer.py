"""Python `websockets` peer of tether's interop tests (interop/tests/python.rs).

    peer.py server            echo/scenario server on 127.0.0.1, port 0; prints
                              "READY <port>", then one "RESULT <query>" line per
                              connection, until killed
    peer.py client URL...     connects to each URL in turn, runs its scenario,
                              prints one "RESULT <query>" line per URL; exits 0
                              when every scenario passed, 1 otherwise

Each connection is described by the query string of its URL:

    id=N                 echoed in the RESULT line
    scenario=NAME        what to do; see SCENARIOS and interop/src/scenario.rs,
                         which is the tether side of the same script
    deflate=SPEC         enable permessage-deflate with these parameters
                         (absent: no compression); SPEC is a comma-separated
                         list of snct, cnct, smwb=N, cmwb=N (empty: the
                         library's defaults)
    protocols=A,B        client: subprotocols to offer
    pick=P               server: subprotocol to choose if offered

A RESULT line is a form-encoded query: id, ok (1 or 0), error, subprotocol,
extensions (the negotiated Sec-WebSocket-Extensions), close_code and
close_reason (what the peer received), frames (fragmented scenario).
"""

import asyncio
import sys
import urllib.parse
from functools import lru_cache

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    ServerPerMessageDeflateFactory,
)
from websockets.frames import Frame, Opcode

# Every step (a receive, a send, a ping) is bounded by this many seconds.
STEP_TIMEOUT = 60
MAX_SIZE = 32 * 1024 * 1024
LARGE = 16 * 1024 * 1024


# ---- Test data (the same in interop/src/data.rs and interop/node/peer.mjs) ----


@lru_cache(maxsize=None)
def lines(n: int) -> str:
    """n characters of "000000000000000\\n000000000000001\\n..."."""
    return "".join("%015d\n" % i for i in range(n // 16 + 1))[:n]


_XOR_A5 = bytes(b ^ 0xA5 for b in range(256))


@lru_cache(maxsize=None)
def binpat(n: int) -> bytes:
    """lines(n) with every byte XORed with 0xA5 (not UTF-8)."""
    return lines(n).encode().translate(_XOR_A5)


def noise(n: int, seed: int) -> bytes:
    """n bytes from a 31-bit LCG: x = x * 1103515245 + 12345; byte = x >> 16."""
    out = bytearray(n)
    x = seed
    for i in range(n):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        out[i] = (x >> 16) & 0xFF
    return bytes(out)


UTF8 = "héllo wörld ✓ 日本語 🚀"
TEXTS = ["hello", UTF8, "", lines(70_000)]
BINS = [b"", bytes(range(256)), binpat(100_000)]
# Fragments the peer sends: str pieces (websockets sends each as a frame).
FRAG_TEXT_PIECES = ["hél", "lo wö", "rld ✓ 日", "本語 🚀"]
FRAG_BIN_PIECES = [b"\x00\x01", b"", b"\xff" * 1000, b"end"]
DEFLATE_MESSAGES = [noise(200, 1), noise(200, 1), noise(1000, 2) * 64, (UTF8 + " ") * 1000]


class Failure(Exception):
    pass


def describe(data) -> str:
    kind = "text" if isinstance(data, str) else "binary"
    shown = data if len(data) <= 40 else data[:40]
    return f"{kind} of {len(data)} ({shown!r}{'...' if len(data) > 40 else ''})"


# ---- Connections that record the pings they receive ----


class Recording:
    def record_init(self):
        self.pings_seen = []

    def record(self, event):
        if isinstance(event, Frame) and event.opcode is Opcode.PING:
            self.pings_seen.append(bytes(event.data))


class RecordingServerConnection(ServerConnection, Recording):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.record_init()

    def process_event(self, event):
        self.record(event)
        super().process_event(event)


class RecordingClientConnection(ClientConnection, Recording):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.record_init()

    def process_event(self, event):
        self.record(event)
        super().process_event(event)


# ---- Steps ----


async def recv(ws):
    try:
        return await asyncio.wait_for(ws.recv(), STEP_TIMEOUT)
    except ConnectionClosed as e:
        raise Failure(f"connection closed while a message was expected: {e}") from None


async def send(ws, data):
    await asyncio.wait_for(ws.send(data), STEP_TIMEOUT)


async def expect(ws, expected, what):
    got = await recv(ws)
    if type(got) is not type(expected) or got != expected:
        raise Failure(f"{what}: expected {describe(expected)}, got {describe(got)}")


async def peer_echoes(ws, messages):
    """tether sends each message, the peer checks it and echoes it."""
    for i, m in enumerate(messages):
        await expect(ws, m, f"message {i} from tether")
        await send(ws, m)


async def peer_sends(ws, messages):
    """The peer sends each message, tether echoes it, the peer checks the echo."""
    for i, m in enumerate(messages):
        await send(ws, m)
        await expect(ws, m, f"echo {i} from tether")


async def expect_close(ws, report, code=1000, reason="done"):
    """Waits for tether's close frame with code and reason."""
    try:
        got = await asyncio.wait_for(ws.recv(), STEP_TIMEOUT)
        raise Failure(f"expected a close, got {describe(got)}")
    except ConnectionClosed:
        pass
    await asyncio.wait_for(ws.wait_closed(), STEP_TIMEOUT)
    report["close_code"] = ws.close_code
    report["close_reason"] = ws.close_reason
    if (ws.close_code, ws.close_reason) != (code, reason):
        raise Failure(f"expected close {code} {reason!r}, got {ws.close_code} {ws.close_reason!r}")


async def recv_fragments(ws, expected, what):
    """Receives one message frame by frame; returns the number of frames."""
    pieces = []
    try:
        async for piece in ws.recv_streaming():
            pieces.append(piece)
    except ConnectionClosed as e:
        raise Failure(f"connection closed during {what}: {e}") from None
    joined = "".join(pieces) if isinstance(expected, str) else b"".join(pieces)
    if type(joined) is not type(expected) or joined != expected:
        raise Failure(f"{what}: expected {describe(expected)}, got {describe(joined)}")
    return len(pieces)


# ---- Scenarios (peer side) ----


async def scenario_text(ws, report):
    await peer_echoes(ws, TEXTS)
    await peer_sends(ws, TEXTS)
    await expect_close(ws, report)


async def scenario_binary(ws, report):
    await peer_echoes(ws, BINS)
    await peer_sends(ws, BINS)
    await expect_close(ws, report)


async def scenario_fragmented(ws, report):
    # tether sends UTF8 in 4 frames (cut inside characters) and a binary
    # message in 4 frames (one empty); both arrive as 4 frames.
    text_frames = await asyncio.wait_for(recv_fragments(ws, UTF8, "fragmented text"), STEP_TIMEOUT)
    await send(ws, UTF8)
    bin_frames = await asyncio.wait_for(recv_fragments(ws, b"".join(FRAG_BIN_PIECES), "fragmented binary"), STEP_TIMEOUT)
    await send(ws, b"".join(FRAG_BIN_PIECES))
    report["frames"] = f"{text_frames},{bin_frames}"
    if (text_frames, bin_frames) != (4, 4):
        raise Failure(f"expected 4 and 4 frames, got {text_frames} and {bin_frames}")
    # The peer sends the same two messages in 4 frames each.
    await send(ws, FRAG_TEXT_PIECES)
    await expect(ws, UTF8, "echo of the fragmented text")
    await send(ws, FRAG_BIN_PIECES)
    await expect(ws, b"".join(FRAG_BIN_PIECES), "echo of the fragmented binary")
    await expect_close(ws, report)


async def scenario_large(ws, report):
    await peer_echoes(ws, [binpat(LARGE)])
    await peer_sends(ws, [lines(LARGE)])
    await expect_close(ws, report)


async def scenario_ping(ws, report):
    # tether pings, gets its pong, then says so.
    await expect(ws, "got pong", "text after tether's ping")
    if ws.pings_seen != [b"tether-ping"]:
        raise Failure(f"expected one ping b'tether-ping', saw {ws.pings_seen!r}")
    waiter = await asyncio.wait_for(ws.ping(b"peer-ping"), STEP_TIMEOUT)
    await asyncio.wait_for(waiter, STEP_TIMEOUT)
    await send(ws, "got pong too")
    report["pings"] = ",".join(p.decode() for p in ws.pings_seen)
    await expect_close(ws, report)


async def scenario_close_tether(ws, report):
    await peer_echoes(ws, ["hi"])
    await expect_close(ws, report, 4001, "tether says bye ✓")


async def scenario_close_peer(ws, report):
    await peer_echoes(ws, ["hi"])
    await asyncio.wait_for(ws.close(4002, "peer says bye ✓"), STEP_TIMEOUT)
    await asyncio.wait_for(ws.wait_closed(), STEP_TIMEOUT)
    report["close_code"] = ws.close_code
    report["close_reason"] = ws.close_reason
    # tether echoes the code and the reason (RFC 6455 section 5.5.1).
    if (ws.close_code, ws.close_reason) != (4002, "peer says bye ✓"):
        raise Failure(f"expected tether to answer 4002 'peer says bye ✓', got {ws.close_code} {ws.close_reason!r}")


async def scenario_subprotocol(ws, report):
    if ws.subprotocol != "chat.v2":
        raise Failure(f"expected subprotocol chat.v2, got {ws.subprotocol!r}")
    await peer_echoes(ws, ["hi"])
    await expect_close(ws, report)


async def scenario_deflate(ws, report):
    if not report.get("extensions", "").startswith("permessage-deflate"):
        raise Failure(f"permessage-deflate not negotiated: {report.get('extensions')!r}")
    await peer_echoes(ws, DEFLATE_MESSAGES)
    text_frames = await asyncio.wait_for(recv_fragments(ws, UTF8, "fragmented text"), STEP_TIMEOUT)
    await send(ws, UTF8)
    report["frames"] = str(text_frames)
    await peer_sends(ws, DEFLATE_MESSAGES)
    await send(ws, FRAG_TEXT_PIECES)
    await expect(ws, UTF8, "echo of the fragmented text")
    await expect_close(ws, report)


SCENARIOS = {
    "text": scenario_text,
    "binary": scenario_binary,
    "fragmented": scenario_fragmented,
    "large": scenario_large,
    "ping": scenario_ping,
    "close-tether": scenario_close_tether,
    "close-peer": scenario_close_peer,
    "subprotocol": scenario_subprotocol,
    "deflate": scenario_deflate,
}


# ---- Plumbing ----


def query_of(path_or_url: str) -> dict:
    query = urllib.parse.urlsplit(path_or_url).query
    return {k: v[-1] for k, v in urllib.parse.parse_qs(query, keep_blank_values=True).items()}


def deflate_params(spec: str, server: bool) -> dict:
    params = {}
    for item in filter(None, spec.split(",")):
        name, _, value = item.partition("=")
        if name == "snct":
            params["server_no_context_takeover"] = True
        elif name == "cnct":
            params["client_no_context_takeover"] = True
        elif name == "smwb":
            params["server_max_window_bits"] = int(value)
        elif name == "cmwb":
            params["client_max_window_bits"] = int(value)
        else:
            raise ValueError(f"unknown deflate parameter {item!r}")
    return params


def emit(report: dict) -> None:
    report = {k: "" if v is None else str(v) for k, v in report.items()}
    print("RESULT " + urllib.parse.urlencode(report, quote_via=urllib.parse.quote), flush=True)


async def run_scenario(ws, query: dict) -> dict:
    report = {
        "id": query.get("id", ""),
        "ok": 0,
        "subprotocol": ws.subprotocol or "",
        "extensions": ws.response.headers.get("Sec-WebSocket-Extensions", "") if ws.response else "",
    }
    try:
        scenario = SCENARIOS[query.get("scenario", "")]
        await scenario(ws, report)
        report["ok"] = 1
    except Exception as e:  # reported to the Rust test, which fails
        report["error"] = f"{type(e).__name__}: {e}"
    return report


async def server_main() -> None:
    def process_request(connection, request):
        query = query_of(request.path)
        if "deflate" in query:
            factory = ServerPerMessageDeflateFactory(**deflate_params(query["deflate"], server=True))
            connection.protocol.available_extensions = [factory]
        return None

    def select_subprotocol(connection, offered):
        pick = query_of(connection.request.path).get("pick")
        return pick if pick in offered else None

    async def handler(ws):
        emit(await run_scenario(ws, query_of(ws.request.path)))

    async with serve(
        handler,
        "127.0.0.1",
        0,
        compression=None,
        process_request=process_request,
        select_subprotocol=select_subprotocol,
        create_connection=RecordingServerConnection,
        max_size=MAX_SIZE,
        ping_interval=None,
        open_timeout=STEP_TIMEOUT,
        close_timeout=STEP_TIMEOUT,
    ) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"READY {port}", flush=True)
        await server.serve_forever()


async def client_main(urls) -> int:
    failed = 0
    for url in urls:
        query = query_of(url)
        extensions = None
        if "deflate" in query:
            extensions = [ClientPerMessageDeflateFactory(**deflate_params(query["deflate"], server=False))]
        protocols = [p for p in query.get("protocols", "").split(",") if p] or None
        try:
            async with connect(
                url,
                subprotocols=protocols,
                extensions=extensions,
                compression=None,
                create_connection=RecordingClientConnection,
                max_size=MAX_SIZE,
                ping_interval=None,
                open_timeout=STEP_TIMEOUT,
                close_timeout=STEP_TIMEOUT,
            ) as ws:
                report = await run_scenario(ws, query)
        except Exception as e:
            report = {"id": query.get("id", ""), "ok": 0, "error": f"{type(e).__name__}: {e}"}
        emit(report)
        failed += report["ok"] != 1
    return 1 if failed else 0


def main() -> int:
    if len(sys.argv) >= 2 and sys.argv[1] == "server":
        asyncio.run(server_main())
        return 0
    if len(sys.argv) >= 3 and sys.argv[1] == "client":
        return asyncio.run(client_main(sys.argv[2:]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
