//! Which file-system events mean a watched file may have new content.
//!
//! On Linux, notify reports `open` and close-after-read as events too. A watcher that reloads
//! on every event therefore wakes itself with its own reads: it re-reads its files every
//! debounce period forever. Every watcher in Warden filters through [`may_change_content`].

use notify::EventKind;
use notify::event::{AccessKind, AccessMode};

/// Whether a file event can mean new content: writes, creations, renames and removals; not
/// reads (`open`, `read`, close after reading), which our own reloads cause.
pub fn may_change_content(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) => true,
        EventKind::Access(_) | EventKind::Any | EventKind::Other => false,
    }
}

#[cfg(test)]
mod tests {
    use notify::event::{CreateKind, ModifyKind, RemoveKind, RenameMode};

    use super::*;

    #[test]
    fn writes_creations_renames_and_removals_may_change_content() {
        for kind in [
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            EventKind::Create(CreateKind::File),
            EventKind::Modify(ModifyKind::Any),
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            EventKind::Remove(RemoveKind::File),
        ] {
            assert!(may_change_content(&kind), "{kind:?}");
        }
    }

    #[test]
    fn reads_do_not() {
        for kind in [
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            EventKind::Access(AccessKind::Read),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            EventKind::Any,
            EventKind::Other,
        ] {
            assert!(!may_change_content(&kind), "{kind:?}");
        }
    }
}
