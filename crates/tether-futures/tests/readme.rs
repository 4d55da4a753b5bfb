//! The README's futures-io example compiles and runs (loopback only,
//! bounded in time).

use std::time::Duration;

use tether_futures::{CloseCode, Message};

// From the README, as it is there.
fn main() -> Result<(), tether_futures::Error> {
    // smol (recommended); on async-std: async_std::task::block_on,
    // async_std::net::TcpListener and async_std::task::spawn.
    smol::block_on(async {
        let listener = smol::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("ws://{}/", listener.local_addr()?);
        smol::spawn(async move {
            let (tcp, _) = listener.accept().await?;
            let mut ws = tether_futures::accept(tcp).await?;
            while let Some(message) = ws.recv().await {
                ws.feed(message?).await?; // what one read brought leaves in one write
            }
            Ok::<_, tether_futures::Error>(())
        })
        .detach();

        let mut ws = tether_futures::connect(&url).await?;
        ws.send(Message::Text("hello".into())).await?;
        println!("{:?}", ws.recv().await.transpose()?);
        ws.close(CloseCode::NORMAL, "done").await
    })
}

#[test]
fn readme_example_runs() {
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(main().map_err(|e| e.to_string())));
    let outcome = result.recv_timeout(Duration::from_secs(30));
    assert!(matches!(outcome, Ok(Ok(()))), "{outcome:?}");
}
