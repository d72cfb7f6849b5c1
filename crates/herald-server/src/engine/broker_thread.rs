//! The broker thread: a single-threaded runtime of its own on which the network engines (Redis,
//! NATS) are connected, so their connection tasks (the Redis client's multiplexed connection
//! and PUB/SUB supervisor, the NATS client's connection) never wait in a worker's run queue.
//!
//! Why: a worker runs thousands of connection tasks. When a publication fans out to the node's
//! own subscribers, their tasks fill the worker's queue; a broker reply that arrives meanwhile
//! (the `PUBLISH` answer an API request waits for) was read only once the worker had written
//! the whole fan-out, and the request then waited for its turn again. On this thread the reply
//! is read at once, and the waiting request is woken from another thread, which puts it in its
//! worker's cross-thread queue (served every few dozen tasks) instead of behind the fan-out.
//! docs/architecture.md, "The broker thread", has the measurements.
//!
//! [`OnBrokerThread`] wraps an engine so that whatever its calls spawn or connect (the Redis
//! client reconnects from the call that found the connection broken, and spawns the new
//! connection's task where that call runs) also lands here, not on the caller's worker.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use herald_hub::broker::{
    BoxFuture, Broker, BrokerError, BrokerHandler, HistoryQuery, HistorySlice, PresenceManager, PublishOptions,
    PublishOutcome,
};
use herald_proto::{ClientInfo, Publication};
use tokio::runtime::Handle;

/// The thread and its runtime; stopping it (on drop) ends the engine's connection tasks.
pub struct BrokerThread {
    handle: Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BrokerThread {
    pub fn start() -> io::Result<BrokerThread> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new().name("herald-broker".into()).spawn(move || {
            runtime.block_on(async {
                let _ = stopped.await;
            });
        })?;
        Ok(BrokerThread { handle, stop: Some(stop), thread: Some(thread) })
    }

    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Runs `future` on the broker thread (whatever it spawns stays there) and waits for its
    /// output from the calling runtime.
    pub async fn run<T: Send + 'static>(&self, future: impl Future<Output = T> + Send + 'static) -> T {
        match self.handle.spawn(future).await {
            Ok(output) => output,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("the broker thread stopped while starting the engine: {e}"),
        }
    }
}

impl Drop for BrokerThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Never join from the broker thread itself (it would wait for itself).
        if let Some(thread) = self.thread.take()
            && thread.thread().id() != std::thread::current().id()
        {
            let _ = thread.join();
        }
    }
}

/// A future polled inside the broker runtime's context: what it spawns, and the sockets and
/// timers it creates, belong to the broker thread. The future itself still runs in the caller's
/// task; entering a context is a thread-local swap.
struct Entered<'a, T> {
    handle: &'a Handle,
    future: BoxFuture<'a, T>,
}

impl<T> Future for Entered<'_, T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let _context = self.handle.enter();
        self.future.as_mut().poll(cx)
    }
}

/// An engine whose calls run with the broker runtime entered ([`Entered`]).
pub struct OnBrokerThread<E> {
    engine: Arc<E>,
    handle: Handle,
}

impl<E> OnBrokerThread<E> {
    /// `handle`: the broker thread's runtime ([`BrokerThread::handle`]).
    pub fn new(engine: Arc<E>, handle: Handle) -> Self {
        OnBrokerThread { engine, handle }
    }

    fn entered<'a, T: 'a>(&'a self, future: BoxFuture<'a, T>) -> BoxFuture<'a, T> {
        Box::pin(Entered { handle: &self.handle, future })
    }
}

impl<E: Broker> Broker for OnBrokerThread<E> {
    fn set_handler(&self, handler: Arc<dyn BrokerHandler>) -> Result<(), BrokerError> {
        self.engine.set_handler(handler)
    }

    fn publish<'a>(
        &'a self,
        channel: &'a str,
        publication: Publication,
        opts: &'a PublishOptions,
    ) -> BoxFuture<'a, Result<PublishOutcome, BrokerError>> {
        self.entered(self.engine.publish(channel, publication, opts))
    }

    fn publish_join<'a>(&'a self, channel: &'a str, info: ClientInfo) -> BoxFuture<'a, Result<(), BrokerError>> {
        self.entered(self.engine.publish_join(channel, info))
    }

    fn publish_leave<'a>(&'a self, channel: &'a str, info: ClientInfo) -> BoxFuture<'a, Result<(), BrokerError>> {
        self.entered(self.engine.publish_leave(channel, info))
    }

    fn publish_control<'a>(&'a self, node: Option<&'a str>, payload: Bytes) -> BoxFuture<'a, Result<(), BrokerError>> {
        self.entered(self.engine.publish_control(node, payload))
    }

    fn delivers_control(&self) -> bool {
        self.engine.delivers_control()
    }

    fn subscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        self.entered(self.engine.subscribe(channel))
    }

    fn unsubscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        self.entered(self.engine.unsubscribe(channel))
    }

    fn history<'a>(
        &'a self,
        channel: &'a str,
        query: HistoryQuery,
    ) -> BoxFuture<'a, Result<HistorySlice, BrokerError>> {
        self.entered(self.engine.history(channel, query))
    }

    fn remove_history<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        self.entered(self.engine.remove_history(channel))
    }

    fn housekeep(&self, now_ms: i64) {
        let _context = self.handle.enter();
        self.engine.housekeep(now_ms);
    }

    fn healthy(&self) -> bool {
        Broker::healthy(&*self.engine)
    }
}

impl<E: PresenceManager> PresenceManager for OnBrokerThread<E> {
    fn add_presence<'a>(&'a self, channel: &'a str, info: ClientInfo) -> BoxFuture<'a, Result<(), BrokerError>> {
        self.entered(self.engine.add_presence(channel, info))
    }

    fn remove_presence<'a>(&'a self, channel: &'a str, client: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        self.entered(self.engine.remove_presence(channel, client))
    }

    fn presence<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<HashMap<String, ClientInfo>, BrokerError>> {
        self.entered(self.engine.presence(channel))
    }

    fn presence_stats<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(u32, u32), BrokerError>> {
        self.entered(self.engine.presence_stats(channel))
    }

    fn healthy(&self) -> bool {
        PresenceManager::healthy(&*self.engine)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_executes_on_the_broker_thread_and_what_it_spawns_stays_there() {
        let thread = BrokerThread::start().expect("broker thread");
        let caller = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let (ran_on, spawned_on) = caller.block_on(thread.run(async {
            let spawned = tokio::spawn(async { std::thread::current().name().map(str::to_owned) });
            (std::thread::current().name().map(str::to_owned), spawned.await.expect("spawned task"))
        }));
        assert_eq!(ran_on.as_deref(), Some("herald-broker"));
        assert_eq!(spawned_on.as_deref(), Some("herald-broker"));
    }

    #[test]
    fn an_entered_future_runs_in_its_caller_but_spawns_on_the_broker_thread() {
        let thread = BrokerThread::start().expect("broker thread");
        let caller =
            tokio::runtime::Builder::new_current_thread().thread_name("caller").enable_all().build().expect("runtime");
        let handle = thread.handle().clone();
        let (polled_on, spawned_on) = caller.block_on(async move {
            let future: BoxFuture<'_, _> = Box::pin(async {
                let spawned = tokio::spawn(async { std::thread::current().id() });
                (std::thread::current().id(), spawned.await.expect("spawned task"))
            });
            Entered { handle: &handle, future }.await
        });
        assert_eq!(polled_on, std::thread::current().id(), "the caller's task polls it");
        assert_ne!(spawned_on, polled_on, "its spawns go to the broker thread");
    }

    #[test]
    fn dropping_the_thread_stops_its_tasks() {
        let thread = BrokerThread::start().expect("broker thread");
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        thread.handle().spawn(async move {
            let _keep = tx;
            std::future::pending::<()>().await;
        });
        drop(thread);
        // The task (and the sender it held) is dropped with the runtime.
        let outcome = rx.recv_timeout(std::time::Duration::from_secs(5));
        assert_eq!(outcome, Err(std::sync::mpsc::RecvTimeoutError::Disconnected));
    }
}
