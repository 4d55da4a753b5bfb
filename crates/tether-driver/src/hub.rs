//! Publish/subscribe between connections: topics, a bounded queue per
//! subscriber with a policy for slow ones, messages encoded once.
//!
//! A [`Hub`] holds topics; each connection gets a [`Subscriber`] (its own
//! bounded queue), subscribes it to topics, and forwards what arrives to its
//! WebSocket. [`Hub::publish`] never waits: it prepares the message once
//! ([`PreparedMessage`]: the frame's bytes shared by every server
//! connection) and pushes a reference into each subscriber's queue. A
//! subscriber whose queue is full (its peer reads slower than the topic
//! goes) meets the hub's [`SlowPolicy`]; the publisher and the other
//! subscribers never wait for it. The hub is runtime-neutral: a subscriber
//! is polled like any future, on tokio, smol, async-std or a blocking loop.
//!
//! ```
//! use tether_driver::hub::{Delivery, Hub, HubConfig};
//! use tether_driver::Message;
//!
//! let hub = Hub::new(HubConfig::default());
//! let alice = hub.subscriber(); // one per connection
//! alice.subscribe("room:1");
//! hub.publish("room:1", Message::Text("hello".into()));
//! // The connection's loop sends what arrives: `ws.feed_prepared(&message)`.
//! assert!(matches!(alice.try_recv(), Some(Delivery::Message(_))));
//! ```
//!
//! See the tokio adapter's `broadcast-server` and `chat-node` examples for
//! the loop that forwards a subscriber's queue to its connection.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::future::poll_fn;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use tether_proto::{CloseCode, PreparedMessage};

/// What happens to a subscriber whose queue is full when a message comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SlowPolicy {
    /// Drop the oldest queued message to make room (a live feed: the latest
    /// state matters most). The subscriber counts what it lost
    /// ([`Subscriber::dropped`]).
    DropOldest,
    /// Drop the new message (a log: what is queued stays in order, the
    /// gap is at the end).
    DropNewest,
    /// Disconnect the subscriber: its queue is freed, it leaves every topic,
    /// and its next [`Subscriber::recv`] says to close with this code (1008
    /// policy violation, or 1013 try again later). Nothing is lost silently.
    Disconnect(CloseCode),
}

/// Settings of a [`Hub`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct HubConfig {
    /// Messages a subscriber may have queued (default 1024). With the
    /// messages shared, a queue costs a pointer per message; the memory a
    /// burst can hold is at most this many messages per subscriber.
    pub queue_len: usize,
    /// What to do when a subscriber's queue is full (default
    /// [`SlowPolicy::Disconnect`] with 1013, try again later).
    pub policy: SlowPolicy,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            queue_len: 1024,
            policy: SlowPolicy::Disconnect(CloseCode::TRY_AGAIN_LATER),
        }
    }
}

impl HubConfig {
    /// A queue of `queue_len` messages with `policy`.
    pub fn new(queue_len: usize, policy: SlowPolicy) -> Self {
        Self {
            queue_len: queue_len.max(1),
            policy,
        }
    }
}

/// Topics and their subscribers. Cheap to clone (an `Arc`).
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

struct HubInner {
    config: HubConfig,
    topics: RwLock<HashMap<String, Vec<Arc<Slot>>>>,
    next_id: AtomicU64,
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let topics = self.inner.topics.read().map(|t| t.len()).unwrap_or(0);
        f.debug_struct("Hub")
            .field("config", &self.inner.config)
            .field("topics", &topics)
            .finish()
    }
}

/// One subscriber's queue and state.
struct Slot {
    id: u64,
    state: Mutex<SlotState>,
    waker: AtomicWaker,
}

#[derive(Default)]
struct SlotState {
    queue: VecDeque<PreparedMessage>,
    topics: HashSet<String>,
    dropped: u64,
    disconnect: Option<CloseCode>,
}

impl Slot {
    fn state(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What [`Hub::publish`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Published {
    /// Subscribers the message was queued for.
    pub queued: usize,
    /// Subscribers that lost a message to the policy (the new one or their
    /// oldest).
    pub dropped: usize,
    /// Subscribers disconnected by this publish.
    pub disconnected: usize,
}

impl Hub {
    /// A hub with `config`.
    pub fn new(config: HubConfig) -> Self {
        Self {
            inner: Arc::new(HubInner {
                config,
                topics: RwLock::new(HashMap::new()),
                next_id: AtomicU64::new(0),
            }),
        }
    }

    /// A new subscriber (one per connection), subscribed to nothing yet.
    pub fn subscriber(&self) -> Subscriber {
        Subscriber {
            hub: self.inner.clone(),
            slot: Arc::new(Slot {
                id: self.inner.next_id.fetch_add(1, Ordering::Relaxed),
                state: Mutex::new(SlotState::default()),
                waker: AtomicWaker::new(),
            }),
        }
    }

    /// Queues `message` for every subscriber of `topic`, encoded once;
    /// never waits. A `Message` converts into a [`PreparedMessage`]; pass
    /// one prepared with [`SendOptions::uncompressed`](tether_proto::SendOptions::uncompressed)
    /// for a secret.
    pub fn publish(&self, topic: &str, message: impl Into<PreparedMessage>) -> Published {
        let message = message.into();
        let mut published = Published::default();
        let mut slow = Vec::new();
        {
            let topics = self.inner.topics.read().unwrap_or_else(PoisonError::into_inner);
            let Some(slots) = topics.get(topic) else {
                return published;
            };
            for slot in slots {
                let mut state = slot.state();
                if state.disconnect.is_some() {
                    continue;
                }
                if state.queue.len() >= self.inner.config.queue_len {
                    match self.inner.config.policy {
                        SlowPolicy::DropOldest => {
                            state.queue.pop_front();
                            state.dropped += 1;
                            published.dropped += 1;
                        }
                        SlowPolicy::DropNewest => {
                            state.dropped += 1;
                            published.dropped += 1;
                            continue;
                        }
                        SlowPolicy::Disconnect(code) => {
                            state.disconnect = Some(code);
                            state.queue = VecDeque::new();
                            published.disconnected += 1;
                            drop(state);
                            slot.waker.wake();
                            slow.push(slot.clone());
                            continue;
                        }
                    }
                }
                state.queue.push_back(message.clone());
                published.queued += 1;
                drop(state);
                slot.waker.wake();
            }
        }
        // Disconnected subscribers leave every topic (under the write lock,
        // after the read lock is gone).
        for slot in slow {
            let topics = std::mem::take(&mut slot.state().topics);
            self.inner.remove(slot.id, topics.iter().map(String::as_str));
        }
        published
    }

    /// How many subscribers `topic` has.
    pub fn subscribers(&self, topic: &str) -> usize {
        let topics = self.inner.topics.read().unwrap_or_else(PoisonError::into_inner);
        topics.get(topic).map_or(0, Vec::len)
    }

    /// The hub's settings.
    pub fn config(&self) -> HubConfig {
        self.inner.config
    }
}

impl HubInner {
    fn remove<'a>(&self, id: u64, topics: impl Iterator<Item = &'a str>) {
        let mut map = self.topics.write().unwrap_or_else(PoisonError::into_inner);
        for topic in topics {
            if let Some(slots) = map.get_mut(topic) {
                slots.retain(|slot| slot.id != id);
                if slots.is_empty() {
                    map.remove(topic);
                }
            }
        }
    }
}

/// What a subscriber receives.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Delivery {
    /// A published message, to send with `send_prepared` or
    /// `feed_prepared`.
    Message(PreparedMessage),
    /// The subscriber was too slow for [`SlowPolicy::Disconnect`]: close
    /// the connection with this code.
    Disconnect(CloseCode),
}

/// One connection's place in a [`Hub`]: its queue and its topics. Leaves
/// every topic when dropped (when its connection ends).
pub struct Subscriber {
    hub: Arc<HubInner>,
    slot: Arc<Slot>,
}

impl fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.slot.state();
        f.debug_struct("Subscriber")
            .field("topics", &state.topics)
            .field("queued", &state.queue.len())
            .field("dropped", &state.dropped)
            .field("disconnect", &state.disconnect)
            .finish()
    }
}

impl Subscriber {
    /// Subscribes to `topic` (again is a no-op). After a disconnect by the
    /// policy, this does nothing.
    pub fn subscribe(&self, topic: &str) {
        let mut state = self.slot.state();
        if state.disconnect.is_some() || !state.topics.insert(topic.to_owned()) {
            return;
        }
        drop(state);
        let mut map = self.hub.topics.write().unwrap_or_else(PoisonError::into_inner);
        map.entry(topic.to_owned()).or_default().push(self.slot.clone());
    }

    /// Leaves `topic`.
    pub fn unsubscribe(&self, topic: &str) {
        if self.slot.state().topics.remove(topic) {
            self.hub.remove(self.slot.id, std::iter::once(topic));
        }
    }

    /// The topics subscribed to.
    pub fn topics(&self) -> Vec<String> {
        self.slot.state().topics.iter().cloned().collect()
    }

    /// Messages lost to [`SlowPolicy::DropOldest`] or
    /// [`SlowPolicy::DropNewest`] so far.
    pub fn dropped(&self) -> u64 {
        self.slot.state().dropped
    }

    /// Messages queued now.
    pub fn queued(&self) -> usize {
        self.slot.state().queue.len()
    }

    /// The next delivery, if one is queued.
    pub fn try_recv(&self) -> Option<Delivery> {
        let mut state = self.slot.state();
        if let Some(message) = state.queue.pop_front() {
            return Some(Delivery::Message(message));
        }
        state.disconnect.map(Delivery::Disconnect)
    }

    /// Polls for the next delivery; registers `cx`'s waker when none is
    /// queued.
    pub fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Delivery> {
        if let Some(delivery) = self.try_recv() {
            return Poll::Ready(delivery);
        }
        self.slot.waker.register(cx.waker());
        // A publish between the check and the registration woke nobody.
        match self.try_recv() {
            Some(delivery) => Poll::Ready(delivery),
            None => Poll::Pending,
        }
    }

    /// The next delivery. Cancel-safe.
    pub async fn recv(&self) -> Delivery {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Moves up to `max` queued messages into `out` (to send a burst with
    /// one write: `feed_prepared` each, then `flush`); returns how many.
    /// Stops before a disconnect, which [`try_recv`](Self::try_recv)
    /// reports.
    pub fn drain_into(&self, out: &mut Vec<PreparedMessage>, max: usize) -> usize {
        let mut state = self.slot.state();
        let n = state.queue.len().min(max);
        out.extend(state.queue.drain(..n));
        n
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let topics = std::mem::take(&mut self.slot.state().topics);
        self.hub.remove(self.slot.id, topics.iter().map(String::as_str));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tether_proto::Message;

    fn text(s: &str) -> PreparedMessage {
        PreparedMessage::new(Message::Text(s.into()))
    }

    fn texts(sub: &Subscriber) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(Delivery::Message(m)) = sub.try_recv() {
            let Message::Text(t) = m.message() else { panic!() };
            out.push(t.as_str().to_owned());
        }
        out
    }

    #[test]
    fn topics_deliver_to_their_subscribers_only() {
        let hub = Hub::new(HubConfig::default());
        let (a, b) = (hub.subscriber(), hub.subscriber());
        a.subscribe("news");
        a.subscribe("news");
        b.subscribe("news");
        b.subscribe("sports");
        assert_eq!(hub.subscribers("news"), 2);
        assert_eq!(hub.publish("news", text("n1")).queued, 2);
        assert_eq!(hub.publish("sports", text("s1")).queued, 1);
        assert_eq!(hub.publish("weather", text("w1")).queued, 0);
        assert_eq!(texts(&a), ["n1"]);
        assert_eq!(texts(&b), ["n1", "s1"]);
        b.unsubscribe("news");
        hub.publish("news", text("n2"));
        assert_eq!(texts(&b), Vec::<String>::new());
        // Dropping a subscriber leaves its topics.
        drop(a);
        assert_eq!(hub.subscribers("news"), 0);
        assert_eq!(hub.subscribers("sports"), 1);
    }

    #[test]
    fn the_message_is_shared_not_copied() {
        let hub = Hub::new(HubConfig::default());
        let subs: Vec<Subscriber> = (0..3).map(|_| hub.subscriber()).collect();
        subs.iter().for_each(|s| s.subscribe("t"));
        hub.publish("t", text("shared"));
        let frames: Vec<*const u8> = subs
            .iter()
            .map(|s| match s.try_recv() {
                Some(Delivery::Message(m)) => m.frame().as_ptr(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(frames.windows(2).all(|w| w[0] == w[1]));
    }

    #[test]
    fn slow_subscriber_policies() {
        for (policy, expect) in [
            (SlowPolicy::DropOldest, vec!["2", "3", "4"]),
            (SlowPolicy::DropNewest, vec!["0", "1", "2"]),
        ] {
            let hub = Hub::new(HubConfig::new(3, policy));
            let (slow, fast) = (hub.subscriber(), hub.subscriber());
            slow.subscribe("t");
            fast.subscribe("t");
            for i in 0..5 {
                hub.publish("t", text(&i.to_string()));
                // The fast one keeps up.
                assert_eq!(texts(&fast), [i.to_string()]);
            }
            assert_eq!(texts(&slow), expect, "{policy:?}");
            assert_eq!(slow.dropped(), 2);
            assert_eq!(fast.dropped(), 0);
        }
        let hub = Hub::new(HubConfig::new(2, SlowPolicy::Disconnect(CloseCode::POLICY_VIOLATION)));
        let (slow, fast) = (hub.subscriber(), hub.subscriber());
        slow.subscribe("t");
        slow.subscribe("u");
        fast.subscribe("t");
        hub.publish("t", text("a"));
        hub.publish("t", text("b"));
        let _ = texts(&fast);
        let third = hub.publish("t", text("c"));
        assert_eq!((third.queued, third.disconnected), (1, 1));
        // Its queue is freed, it left every topic, and it is told to close.
        assert_eq!(slow.queued(), 0);
        assert_eq!(hub.subscribers("t"), 1);
        assert_eq!(hub.subscribers("u"), 0);
        assert!(matches!(slow.try_recv(), Some(Delivery::Disconnect(code)) if code == CloseCode::POLICY_VIOLATION));
        slow.subscribe("t");
        assert_eq!(hub.subscribers("t"), 1, "a disconnected subscriber stays out");
        assert_eq!(texts(&fast), ["c"]);
    }

    #[test]
    fn a_burst_stays_bounded() {
        let hub = Hub::new(HubConfig::new(100, SlowPolicy::DropOldest));
        let subs: Vec<Subscriber> = (0..50).map(|_| hub.subscriber()).collect();
        subs.iter().for_each(|s| s.subscribe("t"));
        for i in 0..10_000 {
            hub.publish("t", text(&i.to_string()));
        }
        for sub in &subs {
            assert_eq!(sub.queued(), 100);
            assert_eq!(sub.dropped(), 9_900);
        }
        let mut out = Vec::new();
        assert_eq!(subs[0].drain_into(&mut out, 1000), 100);
        assert_eq!(out.len(), 100);
    }

    #[test]
    fn recv_wakes_on_publish() {
        let hub = Hub::new(HubConfig::default());
        let sub = hub.subscriber();
        sub.subscribe("t");
        let publisher = {
            let hub = hub.clone();
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(20));
                hub.publish("t", text("late"));
            })
        };
        let delivery = futures_util::future::FutureExt::now_or_never(sub.recv());
        assert!(delivery.is_none());
        let delivery = futures_executor_block_on(sub.recv());
        assert!(matches!(delivery, Delivery::Message(_)));
        publisher.join().unwrap();
    }

    /// A minimal executor: parks the thread until woken.
    fn futures_executor_block_on<F: std::future::Future>(future: F) -> F::Output {
        struct Unpark(std::thread::Thread);
        impl std::task::Wake for Unpark {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut future = std::pin::pin!(future);
        loop {
            if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
                return output;
            }
            std::thread::park_timeout(std::time::Duration::from_secs(5));
        }
    }
}
