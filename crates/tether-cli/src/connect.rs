//! `tether connect`: an interactive client like `wscat`, and a pipe for
//! scripts.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use tether_tokio::proxy::Proxy;
use tether_tokio::tls::TlsClient;
use tether_tokio::{ClientBuilder, CloseCode, DeflateConfig, Error, Message, Received};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

use crate::exit::{self, Failure};

/// Open a WebSocket connection: send the lines typed (or piped in) as text
/// messages, print the messages received.
#[derive(Debug, clap::Args)]
#[command(after_help = HELP)]
pub(crate) struct Args {
    /// ws:// or wss:// URL (credentials as ws://user:password@host/)
    url: String,
    /// A header of the opening handshake, 'Name: value' (repeatable)
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// A subprotocol to offer, in order of preference (repeatable)
    #[arg(short, long = "protocol", value_name = "P")]
    protocols: Vec<String>,
    /// Offer permessage-deflate
    #[arg(long)]
    compression: bool,
    /// Connect through a proxy: http://, https://, socks5:// or socks5h:// URL,
    /// or "env" for https_proxy / http_proxy / no_proxy
    #[arg(long, value_name = "URL")]
    proxy: Option<String>,
    /// Accept any server certificate (for development only: anyone on the
    /// path can then read and change the traffic)
    #[arg(short = 'k', long)]
    insecure: bool,
    /// Also trust the certificates of this PEM file (a private CA, a
    /// self-signed server)
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// The Origin header
    #[arg(long)]
    origin: Option<String>,
    /// Append binary messages received to this file instead of printing
    /// them as hex
    #[arg(long, value_name = "FILE")]
    binary_out: Option<PathBuf>,
    /// Connect timeout in seconds
    #[arg(long, default_value_t = 30.0, value_name = "SECONDS")]
    connect_timeout: f64,
    /// The largest message accepted, in bytes
    #[arg(long, default_value_t = 64 << 20, value_name = "BYTES")]
    max_message_size: u64,
}

const HELP: &str = concat!(
    "\
Lines are sent as text messages; a line starting with / is a command:
  /ping [data]            send a ping (the pong is reported on stderr)
  /close [code] [reason]  close with a code (default 1000) and a reason
  /binary FILE            send FILE as one binary message
  /help                   list the commands
  //text                  send \"/text\" as text

In a terminal, lines are edited with history and received messages are
printed as they come (< text, binary as hex). When stdin or stdout is not a
terminal, it reads lines from stdin and prints one received message per line
on stdout (status on stderr), so scripts can pipe through it; at the end of
stdin it closes with 1000 and waits for the server's answer.

Examples:
  tether connect ws://127.0.0.1:8080/ws
  printf 'hello\\n/close 1000 bye\\n' | tether connect ws://127.0.0.1:8080/ws
  tether connect wss://localhost:8443/ws --ca cert.pem -H 'Authorization: Bearer t'

",
    exit::exit_table!()
);

/// What the input side asks for.
enum Input {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Close(CloseCode, String),
}

pub(crate) async fn run(args: Args) -> Result<u8, Failure> {
    let interactive = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    // The line editor may still be waiting in raw mode when the connection
    // ends: the terminal's settings are put back on the way out.
    let _terminal = interactive.then(TerminalGuard::save);
    session(args, interactive).await
}

/// The terminal's settings, restored when dropped.
struct TerminalGuard(Option<libc::termios>);

impl TerminalGuard {
    fn save() -> Self {
        let mut termios = std::mem::MaybeUninit::<libc::termios>::uninit();
        // SAFETY: tcgetattr fills `termios` when it returns 0.
        let saved = unsafe { libc::tcgetattr(libc::STDIN_FILENO, termios.as_mut_ptr()) == 0 }
            // SAFETY: initialized by the successful tcgetattr above.
            .then(|| unsafe { termios.assume_init() });
        Self(saved)
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        if let Some(termios) = &self.0 {
            // SAFETY: a termios that tcgetattr returned for this descriptor.
            unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, termios) };
            // Bracketed paste off, as the editor would on return.
            eprint!("\x1b[?2004l");
        }
    }
}

async fn session(args: Args, interactive: bool) -> Result<u8, Failure> {
    let builder = builder(&args)?;
    let ws = builder.connect().await.map_err(|e| exit::for_error(&e))?;
    let extensions: Vec<String> = ws.negotiated_extensions().map(ToString::to_string).collect();
    eprintln!(
        "connected to {} (subprotocol: {}, extensions: {})",
        args.url,
        ws.subprotocol().unwrap_or("none"),
        if extensions.is_empty() {
            "none".to_owned()
        } else {
            extensions.join(", ")
        }
    );
    let (mut read, mut write) = ws.split();

    // Input first: in a terminal, the line editor provides the printer.
    let (lines_tx, mut lines) = mpsc::channel::<String>(64);
    if interactive {
        spawn_line_editor(lines_tx);
    } else {
        tokio::spawn(async move {
            let mut stdin = BufReader::new(tokio::io::stdin()).lines();
            while let Ok(Some(line)) = stdin.next_line().await {
                if lines_tx.send(line).await.is_err() {
                    break;
                }
            }
        });
    }

    // The receiving task prints until the connection ends.
    let printer = if interactive {
        Printer::terminal()
    } else {
        Printer::Plain
    };
    let binary_out = args.binary_out.clone();
    let mut receiving = tokio::spawn(async move {
        let mut out = Output { printer, binary_out };
        loop {
            match read.recv_event().await {
                None => return Ok(read.close_info()),
                Some(Ok(Received::Message(message))) => out.message(message)?,
                Some(Ok(Received::Pong(data))) => out.status(&format!("pong {}", show_control(&data))),
                Some(Ok(Received::Ping(data))) => out.status(&format!("ping {}", show_control(&data))),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
            }
        }
    });

    let mut closed_by_us = false;
    let ended = loop {
        tokio::select! {
            ended = &mut receiving => break Some(ended),
            line = lines.recv() => {
                let input = match line {
                    // End of input: close normally.
                    None => Input::Close(CloseCode::NORMAL, String::new()),
                    Some(line) => match parse(&line) {
                        Ok(Some(input)) => input,
                        Ok(None) => continue,
                        Err(message) => {
                            eprintln!("{message}");
                            continue;
                        }
                    },
                };
                let result = match input {
                    Input::Text(text) => write.send(Message::Text(text.into())).await,
                    Input::Binary(data) => write.send(Message::Binary(data.into())).await,
                    Input::Ping(data) => write.ping(Bytes::from(data)).await,
                    Input::Close(code, reason) => {
                        closed_by_us = true;
                        write.close(code, &reason).await
                    }
                };
                match result {
                    Ok(()) if closed_by_us => break None,
                    Ok(()) => {}
                    // The send failed because the connection ended: the
                    // receiving task says how.
                    Err(_) => break None,
                }
            }
        }
    };
    let ended = match ended {
        Some(ended) => ended,
        None => match tokio::time::timeout(Duration::from_secs(15), receiving).await {
            Ok(ended) => ended,
            Err(_) => {
                return Err(Failure::new(
                    exit::TIMEOUT,
                    "the server did not finish the close handshake",
                ))
            }
        },
    };
    let closed = match ended {
        Ok(Ok(closed)) => closed,
        Ok(Err(e)) => {
            return Err(exit::for_error(&e));
        }
        Err(e) => return Err(Failure::new(exit::OTHER, format!("the receiving task failed: {e}"))),
    };
    let Some(closed) = closed else {
        return Ok(exit::OK);
    };
    let code = closed.code;
    let reason = if closed.reason.is_empty() {
        String::new()
    } else {
        format!(" {:?}", closed.reason)
    };
    if closed_by_us {
        eprintln!("closed ({code}{reason})");
        return Ok(exit::OK);
    }
    let status = exit::for_peer_close(code);
    if status == exit::OK {
        eprintln!("closed by the server ({code}{reason})");
        Ok(status)
    } else {
        Err(Failure::new(
            status,
            format!("closed by the server with code {code}{reason}"),
        ))
    }
}

fn builder(args: &Args) -> Result<ClientBuilder, Failure> {
    let mut builder = ClientBuilder::new(&args.url)
        .max_message_size(args.max_message_size)
        .connect_timeout(Some(Duration::try_from_secs_f64(args.connect_timeout).map_err(
            |_| Failure::usage(format!("--connect-timeout {}: not a duration", args.connect_timeout)),
        )?));
    for header in &args.headers {
        let (name, value) = header
            .split_once(':')
            .ok_or_else(|| Failure::usage(format!("--header {header:?}: expected 'Name: value'")))?;
        let name = HeaderName::try_from(name.trim())
            .map_err(|_| Failure::usage(format!("--header {header:?}: not a header name")))?;
        let value = HeaderValue::try_from(value.trim())
            .map_err(|_| Failure::usage(format!("--header {header:?}: not a header value")))?;
        builder = builder.header(name, value);
    }
    if !args.protocols.is_empty() {
        builder = builder.protocols(args.protocols.clone());
    }
    if let Some(origin) = &args.origin {
        builder = builder.origin(origin.clone());
    }
    if args.compression {
        builder = builder.permessage_deflate(DeflateConfig::default());
    }
    match args.proxy.as_deref() {
        None => {}
        Some("env") => builder = builder.proxy_from_env(),
        Some(url) => builder = builder.proxy(Proxy::new(url).map_err(|e| Failure::usage(format!("--proxy: {e}")))?),
    }
    if args.insecure || args.ca.is_some() {
        let mut tls = TlsClient::new();
        if let Some(path) = &args.ca {
            let pem = std::fs::read(path).map_err(|e| Failure::usage(format!("--ca {}: {e}", path.display())))?;
            tls = tls
                .add_roots_pem(&pem)
                .map_err(|e| Failure::usage(format!("--ca {}: {e}", path.display())))?;
        }
        if args.insecure {
            tls = tls.dangerous_accept_any_certificate();
        }
        builder = builder.tls(tls);
    }
    Ok(builder)
}

/// A line of input: a command, or text to send.
fn parse(line: &str) -> Result<Option<Input>, String> {
    if let Some(text) = line.strip_prefix("//") {
        return Ok(Some(Input::Text(format!("/{text}"))));
    }
    let Some(command) = line.strip_prefix('/') else {
        return Ok(Some(Input::Text(line.to_owned())));
    };
    let (name, rest) = command.split_once(' ').unwrap_or((command, ""));
    match name {
        "ping" => Ok(Some(Input::Ping(rest.as_bytes().to_vec()))),
        "close" => {
            let rest = rest.trim_start();
            let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
            let code = if code.is_empty() {
                CloseCode::NORMAL
            } else {
                let code: u16 = code
                    .parse()
                    .map_err(|_| format!("/close: {code:?} is not a close code"))?;
                CloseCode::from(code)
            };
            Ok(Some(Input::Close(code, reason.to_owned())))
        }
        "binary" => {
            let path = rest.trim();
            if path.is_empty() {
                return Err("/binary FILE: which file?".to_owned());
            }
            std::fs::read(path)
                .map(|data| Some(Input::Binary(data)))
                .map_err(|e| format!("/binary {path}: {e}"))
        }
        "help" => {
            eprintln!("{}", HELP.split("\n\n").next().unwrap_or(HELP));
            Ok(None)
        }
        _ => Err(format!("unknown command /{name} (try /help; //text sends /text)")),
    }
}

/// A ping's or pong's payload for a status line.
fn show_control(data: &[u8]) -> String {
    match std::str::from_utf8(data) {
        Ok(text) if !text.is_empty() => format!("{text:?}"),
        Ok(_) => "(empty)".to_owned(),
        Err(_) => hex(data),
    }
}

fn hex(data: &[u8]) -> String {
    use std::fmt::Write as _;
    data.iter().fold(String::with_capacity(data.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Where received messages go: stdout line by line, or above the prompt.
enum Printer {
    Plain,
    Terminal(std::sync::Mutex<Box<dyn rustyline::ExternalPrinter + Send>>),
}

impl Printer {
    fn terminal() -> Self {
        match EXTERNAL_PRINTER.lock().ok().and_then(|mut p| p.take()) {
            Some(printer) => Self::Terminal(std::sync::Mutex::new(printer)),
            None => Self::Plain,
        }
    }
}

/// The line editor's printer, handed from its thread to the receiver.
static EXTERNAL_PRINTER: std::sync::Mutex<Option<Box<dyn rustyline::ExternalPrinter + Send>>> =
    std::sync::Mutex::new(None);

struct Output {
    printer: Printer,
    binary_out: Option<PathBuf>,
}

impl Output {
    fn message(&mut self, message: Message) -> Result<(), Error> {
        match message {
            Message::Text(text) => self.line(&format!("< {text}"), text.as_str()),
            Message::Binary(data) => match &self.binary_out {
                Some(path) => {
                    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
                    file.write_all(&data)?;
                    self.status(&format!(
                        "binary message, {} bytes, appended to {}",
                        data.len(),
                        path.display()
                    ));
                }
                None => {
                    let hex = hex(&data);
                    self.line(&format!("< [binary] {hex}"), &hex);
                }
            },
        }
        Ok(())
    }

    /// One received message: `pretty` in a terminal, `plain` on stdout.
    fn line(&mut self, pretty: &str, plain: &str) {
        match &self.printer {
            Printer::Plain => {
                let mut stdout = std::io::stdout().lock();
                let _ = writeln!(stdout, "{plain}");
                let _ = stdout.flush();
            }
            Printer::Terminal(printer) => {
                if let Ok(mut printer) = printer.lock() {
                    let _ = printer.print(format!("{pretty}\n"));
                }
            }
        }
    }

    /// A status line (pong, binary saved) on stderr or above the prompt.
    fn status(&mut self, text: &str) {
        match &self.printer {
            Printer::Plain => eprintln!("{text}"),
            Printer::Terminal(printer) => {
                if let Ok(mut printer) = printer.lock() {
                    let _ = printer.print(format!("* {text}\n"));
                }
            }
        }
    }
}

/// Reads lines with editing and history on a thread of its own (rustyline
/// blocks), and hands its printer over so that messages print above the
/// prompt.
fn spawn_line_editor(lines: mpsc::Sender<String>) {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut editor = match rustyline::DefaultEditor::new() {
            Ok(editor) => editor,
            Err(e) => {
                eprintln!("tether: no line editor ({e}); type lines and press Enter");
                let _ = ready_tx.send(());
                return;
            }
        };
        if let Ok(printer) = editor.create_external_printer() {
            if let Ok(mut slot) = EXTERNAL_PRINTER.lock() {
                *slot = Some(Box::new(printer));
            }
        }
        let _ = ready_tx.send(());
        // Ctrl-C, Ctrl-D: end of input (close with 1000).
        while let Ok(line) = editor.readline("> ") {
            let _ = editor.add_history_entry(line.as_str());
            if lines.blocking_send(line).is_err() {
                break;
            }
        }
    });
    let _ = ready_rx.recv_timeout(Duration::from_secs(2));
}
