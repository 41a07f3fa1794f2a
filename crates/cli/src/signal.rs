//! Stopping a node the way a terminal or a service manager asks: SIGINT
//! (Ctrl-C) or SIGTERM starts a drain, and the last line says how it ended.

/// Resolves on SIGINT or SIGTERM, after saying that requests in flight are
/// being finished.
pub(crate) async fn shutdown() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    eprintln!("Shutting down: finishing requests in flight...");
}

/// Says how the node stopped: `drained` is whether every request in flight
/// finished within the drain timeout.
pub(crate) fn report_stopped(drained: bool) {
    eprintln!(
        "{}",
        if drained {
            "Stopped."
        } else {
            "Stopped; some requests were cut off."
        }
    );
}
