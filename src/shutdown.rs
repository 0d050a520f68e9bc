//! Ctrl-C and SIGTERM as a value that tasks can wait on.

use tokio::sync::watch;

/// A cloneable "stop requested" flag, set by SIGINT/SIGTERM or by [`Shutdown::trigger`].
#[derive(Debug, Clone)]
pub struct Shutdown {
    tx: watch::Sender<bool>,
    rx: watch::Receiver<bool>,
}

impl Shutdown {
    /// A flag that only [`trigger`](Self::trigger) sets.
    pub fn manual() -> Self {
        let (tx, rx) = watch::channel(false);
        Shutdown { tx, rx }
    }

    /// A flag that SIGINT and SIGTERM set (a background task listens for them), for commands
    /// that apply or print transactions: a stop lets the current one finish, and says so.
    pub fn on_signals() -> Self {
        Self::listen(Some("stop requested: finishing the current transaction"))
    }

    /// Like [`on_signals`](Self::on_signals), for commands that only look (`status --watch`):
    /// there is no transaction to finish, so a stop logs nothing.
    pub fn on_signals_quietly() -> Self {
        Self::listen(None)
    }

    fn listen(message: Option<&'static str>) -> Self {
        let shutdown = Self::manual();
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            if let Some(message) = message {
                tracing::info!("{message}");
            }
            trigger.trigger();
        });
        shutdown
    }

    /// Requests a stop.
    pub fn trigger(&self) {
        let _ = self.tx.send(true);
    }

    /// Whether a stop was requested.
    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves once a stop is requested (at once if it already was).
    pub async fn wait(&mut self) {
        let _ = self.rx.wait_for(|stop| *stop).await;
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
