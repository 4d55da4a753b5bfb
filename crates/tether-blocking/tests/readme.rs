//! The README's blocking example compiles (it is not run: it needs a
//! network).
#![allow(dead_code)]

use std::net::TcpListener;

use tether_blocking::{CloseCode, Message};

fn client() -> Result<(), tether_blocking::Error> {
    let mut ws = tether_blocking::connect("wss://echo.example/ws")?;
    ws.send(Message::Text("hello".into()))?;
    if let Some(message) = ws.recv() {
        println!("received {:?}", message?);
    }
    ws.close(CloseCode::NORMAL, "done")?;
    Ok(())
}

fn server() -> std::io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:9001")?;
    for tcp in listener.incoming() {
        let tcp = tcp?;
        std::thread::spawn(move || -> Result<(), tether_blocking::Error> {
            let mut ws = tether_blocking::accept(tcp)?;
            while let Some(message) = ws.recv() {
                ws.feed(message?)?;
            }
            Ok(())
        });
    }
    Ok(())
}

#[test]
fn readme_examples_compile() {
    let _ = client;
    let _ = server;
}
