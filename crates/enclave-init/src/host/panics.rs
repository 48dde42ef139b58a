//! PID 1 must never die, and a panic must not end it (in boot mode it
//! would panic the kernel). Every handler runs under [`guarded`] or
//! [`catch`]; the hook installed by [`install_hook`] keeps the panic's
//! message and place for the log line instead of writing to stderr
//! (which may be a slow console that would block the loop).

use std::panic::AssertUnwindSafe;
use std::sync::Mutex;

use crate::host::console;
use crate::model::config::Level;

static LAST: Mutex<Option<String>> = Mutex::new(None);

/// Replaces the default hook: remember the message and where, print nothing.
pub fn install_hook() {
    std::panic::set_hook(Box::new(|info| {
        let message = message(info.payload());
        let text = match info.location() {
            Some(at) => format!("{message} (at {}:{})", at.file(), at.line()),
            None => message,
        };
        if let Ok(mut last) = LAST.lock() {
            *last = Some(text);
        }
    }));
}

/// Runs `f`; a panic becomes `Err` with its message (and place, once the
/// hook is installed).
pub fn catch<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    std::panic::catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        let recorded = LAST
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        recorded.unwrap_or_else(|| message(payload.as_ref()))
    })
}

/// A panic's message: `panic!`'s text, or what was thrown if it is text.
fn message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Runs `f`; a panic in it is logged (`internal error while handling
/// WHAT: ...`) and becomes `None`.
pub fn guarded<R>(what: &str, f: impl FnOnce() -> R) -> Option<R> {
    match catch(f) {
        Ok(r) => Some(r),
        Err(text) => {
            console::log(
                Level::Error,
                &format!("internal error while handling {what}: {text}; carrying on"),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::panic)]
    fn a_panic_becomes_its_message() {
        assert_eq!(catch(|| 7), Ok(7));
        let text = catch(|| -> u8 { panic!("boom {}", 42) }).unwrap_err();
        assert!(text.starts_with("boom 42"), "{text}");
        let text = catch(|| -> u8 { std::panic::panic_any(String::from("owned")) }).unwrap_err();
        assert!(text.starts_with("owned"), "{text}");
        assert_eq!(guarded("a test", || -> u8 { panic!("x") }), None);
    }
}
