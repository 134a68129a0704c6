//! Where an in-process controller's log goes: the file its process would have written, so
//! that failure messages and log checks read the same either way.

use std::cell::RefCell;
use std::fs::File;
use std::sync::Mutex;

use tracing_subscriber::EnvFilter;

thread_local! {
    /// The subscriber of the test's thread, replaced at each start of the controller.
    static CURRENT: RefCell<Option<tracing::subscriber::DefaultGuard>> = const { RefCell::new(None) };
}

/// Logs this thread (in a current-thread runtime: every task of the test) to `file`, at the
/// controller's default level, from now until the next call or the end of the test.
pub(crate) fn to_file(file: File) {
    let filter =
        EnvFilter::new("info,hyper=warn,rustls=warn,tower=warn,kube_client=warn,kube_runtime=warn");
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Mutex::new(file))
        .with_ansi(false)
        .finish();
    CURRENT.with(|current| {
        // The old guard first: dropping a guard restores the subscriber it replaced.
        drop(current.borrow_mut().take());
        *current.borrow_mut() = Some(tracing::subscriber::set_default(subscriber));
    });
}
