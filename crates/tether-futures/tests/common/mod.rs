//! One test body, two executors: every test runs on smol and on async-std,
//! each bounded by [`TEST_TIMEOUT`].
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use futures_util::future::Either;

/// The longest any test may take.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The executor a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exec {
    Smol,
    AsyncStd,
}

/// A spawned task's result.
pub type Task<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// An accepted TCP stream: async-net's on smol, async-std's own on
/// async-std (both futures-io transports).
pub type Tcp = Either<async_net::TcpStream, async_std::net::TcpStream>;

impl Exec {
    /// Runs `test` to the end on this executor, failing it after
    /// [`TEST_TIMEOUT`].
    pub fn run(self, test: impl Future<Output = ()>) {
        let bounded = futures_lite::future::or(test, async {
            async_io::Timer::after(TEST_TIMEOUT).await;
            panic!("the test took longer than {TEST_TIMEOUT:?} on {self:?}");
        });
        match self {
            Self::Smol => smol::block_on(bounded),
            Self::AsyncStd => async_std::task::block_on(bounded),
        }
    }

    /// Runs `future` as a task of this executor.
    pub fn spawn<T: Send + 'static>(self, future: impl Future<Output = T> + Send + 'static) -> Task<T> {
        match self {
            Self::Smol => Box::pin(smol::spawn(future)),
            Self::AsyncStd => Box::pin(async_std::task::spawn(future)),
        }
    }

    /// A loopback listener of this executor on a free port.
    pub async fn listen(self) -> Listener {
        match self {
            Self::Smol => Listener::Smol(async_net::TcpListener::bind("127.0.0.1:0").await.unwrap()),
            Self::AsyncStd => Listener::AsyncStd(async_std::net::TcpListener::bind("127.0.0.1:0").await.unwrap()),
        }
    }
}

/// A loopback listener.
#[derive(Debug)]
pub enum Listener {
    Smol(async_net::TcpListener),
    AsyncStd(async_std::net::TcpListener),
}

impl Listener {
    pub fn addr(&self) -> SocketAddr {
        match self {
            Self::Smol(l) => l.local_addr(),
            Self::AsyncStd(l) => l.local_addr(),
        }
        .unwrap()
    }

    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr())
    }

    pub async fn accept(&self) -> Tcp {
        match self {
            Self::Smol(l) => Either::Left(l.accept().await.unwrap().0),
            Self::AsyncStd(l) => Either::Right(l.accept().await.unwrap().0),
        }
    }
}

/// Declares `on_smol::NAME` and `on_async_std::NAME` for each
/// `async fn NAME(exec: Exec)` of the test file.
#[macro_export]
macro_rules! on_both_executors {
    ($($name:ident),* $(,)?) => {
        mod on_smol {
            $(#[test]
            fn $name() {
                $crate::common::Exec::Smol.run(super::$name($crate::common::Exec::Smol));
            })*
        }
        mod on_async_std {
            $(#[test]
            fn $name() {
                $crate::common::Exec::AsyncStd.run(super::$name($crate::common::Exec::AsyncStd));
            })*
        }
    };
}
