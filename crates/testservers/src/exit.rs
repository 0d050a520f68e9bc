//! Removing the process-wide servers and the template when the process exits.

use std::sync::Once;

static REGISTERED: Once = Once::new();

/// Registers (once) the `atexit` handler that removes the shared servers and the MariaDB
/// template: the test harness leaves through `exit()`, which runs no destructors of statics.
pub(crate) fn register_cleanup() {
    REGISTERED.call_once(|| serverproc::at_exit(clean_up));
}

extern "C" fn clean_up() {
    // Never unwind into C.
    let _ = std::panic::catch_unwind(|| {
        crate::mariadb::clean_up();
        crate::nats::clean_up();
    });
}
