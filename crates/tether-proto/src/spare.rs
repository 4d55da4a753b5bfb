//! Buffers that waiting connections let go of, kept by the thread for the
//! next connection of the thread that reads or writes.
//!
//! An async shell frees a connection's empty buffers whenever it waits, so
//! that idle connections hold none; without this cache every message would
//! then cost a `malloc` and a `free` of a read buffer (64 KiB by default)
//! and of a write buffer. A thread keeps at most [`KEEP`] buffers of each
//! kind of at most [`MAX_LEN`] bytes, whatever its number of connections:
//! a fixed cost per thread, none per connection.
//!
//! A thread also keeps the allocations of the large receive buffers that
//! large frames last grew buffers into ([`grow_large`]), each of at most
//! [`LARGE_MAX`] bytes and [`LARGE_KEEP_BYTES`] in all: the next large
//! frame on the thread arrives into one of them that nothing points into
//! any more. Without them each such frame costs a large allocation that the
//! allocator gives back to the system when it is freed, and the pages that
//! the next one touches are faulted in again (about 6 page faults per
//! 1 MiB message on the echo benchmark). More than one is kept because a
//! payload is often still held (an echo still being written) when the next
//! connection's large frame arrives.

use std::cell::RefCell;

use bytes::BytesMut;

/// Buffers kept per kind and thread.
pub(crate) const KEEP: usize = 8;
/// The largest buffer kept; larger ones go back to the allocator.
pub(crate) const MAX_LEN: usize = 128 * 1024;
/// The largest allocation a thread keeps for large frames ([`grow_large`]).
pub(crate) const LARGE_MAX: usize = 2 * 1024 * 1024;
/// The most a thread keeps for large frames, all its large buffers
/// together: two of the largest, or four for frames of 1 MiB.
pub(crate) const LARGE_KEEP_BYTES: usize = 2 * LARGE_MAX;

#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    Recv,
    Send,
}

thread_local! {
    static RECV: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
    static SEND: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
    /// The thread's large receive buffers: for each, an empty handle (no
    /// bytes, no room) at the start of its allocation, which keeps the
    /// allocation alive and can reclaim all of it once it is the only
    /// handle left, and the allocation's size.
    static LARGE: RefCell<Vec<(BytesMut, usize)>> = const { RefCell::new(Vec::new()) };
}

/// The thread's buffers of `kind`, borrowed for `f`; `None` while the
/// thread exits (`try_with`: nothing is kept or found then) or if they are
/// borrowed already. Inlined, as are its callers: they run a few times per
/// message.
#[inline]
fn with<T>(kind: Kind, f: impl FnOnce(&mut Vec<BytesMut>) -> Option<T>) -> Option<T> {
    let cell = match kind {
        Kind::Recv => &RECV,
        Kind::Send => &SEND,
    };
    cell.try_with(|spare| f(&mut *spare.try_borrow_mut().ok()?)).ok()?
}

/// Keeps the buffer in `buf` (empty) for the thread's next connection,
/// unless it is tiny or huge or the thread keeps enough already; `buf` is
/// left without room either way (a buffer not kept is dropped). Its
/// allocation may still be shared with payloads handed out (their bytes
/// are not in its view); [`take_into`] checks. In place: the buffer is
/// moved once, from `buf` into the cache, not through the calls on the way
/// (a path taken a few times per message).
#[inline]
pub(crate) fn give_from(kind: Kind, buf: &mut BytesMut) {
    debug_assert!(buf.is_empty());
    if (1024..=MAX_LEN).contains(&buf.capacity())
        && with(kind, |spare| {
            (spare.len() < KEEP).then(|| spare.push(std::mem::take(buf)))
        })
        .is_some()
    {
        return;
    }
    *buf = BytesMut::new();
}

/// Puts in `dst` (which holds no room) a kept buffer with room for at
/// least `min` bytes, if the thread has one: as it was let go of when it
/// has that room still (no work: a receive buffer keeps the room after the
/// bytes parsed out of it, the common case), otherwise rewound to its start
/// if its allocation is its own again (no payload points into it any more)
/// and that gives it room for `size` bytes. The ones that are neither are
/// dropped on the way. Whether the thread had one; it is moved once, from
/// the cache into `dst`.
#[inline]
pub(crate) fn take_into(kind: Kind, min: usize, size: usize, dst: &mut BytesMut) -> bool {
    debug_assert!(min <= size && dst.capacity() == 0);
    with(kind, |spare| {
        drop_unusable(spare, min, size);
        *dst = spare.pop()?;
        Some(())
    })
    .is_some()
}

/// [`give_from`], by value.
#[cfg(test)]
pub(crate) fn give(kind: Kind, mut buf: BytesMut) {
    give_from(kind, &mut buf);
}

/// [`take_into`], returned.
#[cfg(test)]
pub(crate) fn take(kind: Kind, min: usize, size: usize) -> Option<BytesMut> {
    let mut buf = BytesMut::new();
    take_into(kind, min, size, &mut buf).then_some(buf)
}

/// Drops the kept buffers on top that have less than `min` free and cannot
/// be rewound to hold `size`, so that the top one, if any, can serve; a
/// rewound one is rewound in place.
#[inline]
fn drop_unusable(spare: &mut Vec<BytesMut>, min: usize, size: usize) {
    while let Some(buf) = spare.last_mut() {
        if buf.capacity() - buf.len() >= min || buf.try_reclaim(size) {
            return;
        }
        spare.pop();
    }
}

/// Lends `f` a kept buffer with room for at least `min` bytes (or rewound
/// to hold `size`, as [`take_into`] finds one) in place, without taking it out
/// of the cache: a read that would block, or one whose bytes `f` consumes
/// where they arrived, then costs neither a take nor a give. If `f` leaves
/// bytes in it, the buffer leaves the cache and is returned with `f`'s
/// result. `None`, without calling `f`, when the thread has no such
/// buffer.
///
/// The cache stays borrowed while `f` runs; a connection that `f` reaches
/// in the meantime (a transport that is itself a connection of the thread)
/// finds it empty and keeps nothing, as when the thread exits.
#[inline]
pub(crate) fn lend<T>(
    kind: Kind,
    min: usize,
    size: usize,
    f: impl FnOnce(&mut BytesMut) -> T,
) -> Option<(T, Option<BytesMut>)> {
    debug_assert!(min <= size);
    with(kind, |spare| {
        drop_unusable(spare, min, size);
        let buf = spare.last_mut()?;
        let out = f(buf);
        let taken = if buf.is_empty() { None } else { spare.pop() };
        Some((out, taken))
    })
}

/// [`lend`], the buffer that leaves the cache put in `dst` (which holds
/// no room) instead of returned: when `f` does not need `dst`'s owner,
/// one move less on a path taken at every read.
#[inline]
pub(crate) fn lend_into<T>(
    kind: Kind,
    min: usize,
    size: usize,
    dst: &mut BytesMut,
    f: impl FnOnce(&mut BytesMut) -> T,
) -> Option<T> {
    debug_assert!(min <= size && dst.capacity() == 0);
    with(kind, |spare| {
        drop_unusable(spare, min, size);
        let buf = spare.last_mut()?;
        let out = f(buf);
        if !buf.is_empty() {
            *dst = spare.pop()?;
        }
        Some(out)
    })
}

/// Moves the bytes of `buf` (the start of a large frame) into a buffer
/// with room for `cap` bytes in all: one of the thread's large buffers
/// that nothing else points into and that is large enough; failing that,
/// a new one, which the thread keeps if its large buffers stay within
/// [`LARGE_KEEP_BYTES`] (those that nothing points into but are too small
/// are let go of first). `buf`'s own buffer, emptied, goes to the thread's
/// cache as [`give_from`] keeps buffers. `false`, with nothing done, when
/// `cap` is over [`LARGE_MAX`], or when every large buffer of the thread is
/// in use (a payload split off it not yet dropped, or the buffer of a
/// connection receiving into it) and there is no room for one more: the
/// caller then grows `buf` as usual.
///
/// The room is exactly `cap`, the end of the frame: once the frame is
/// split off, the buffer left has no room and is dropped, so nothing but
/// the frame's payload holds the allocation until it comes back here.
pub(crate) fn grow_large(buf: &mut BytesMut, cap: usize) -> bool {
    if cap > LARGE_MAX || cap < buf.len() {
        return false;
    }
    let grown = LARGE.try_with(|kept| {
        let mut kept = kept.try_borrow_mut().ok()?;
        // The first kept buffer that is free and large enough: room for
        // exactly `cap` bytes from the start of its allocation
        // (`try_reclaim` makes room only for a handle that is the only one).
        let (i, mut large) = match kept.iter_mut().position(|(handle, _)| handle.try_reclaim(cap)) {
            Some(i) => (i, std::mem::take(&mut kept[i].0)),
            None => {
                // Free ones too small make way for a larger one.
                kept.retain_mut(|(handle, _)| !handle.try_reclaim(1));
                let held: usize = kept.iter().map(|&(_, size)| size).sum();
                if held + cap > LARGE_KEEP_BYTES {
                    return None;
                }
                let large = BytesMut::with_capacity(cap);
                kept.push((BytesMut::new(), large.capacity()));
                (kept.len() - 1, large)
            }
        };
        large.extend_from_slice(buf);
        // `split_to(0)`: an empty handle that shares the allocation.
        kept[i].0 = large.split_to(0);
        Some(large)
    });
    let Some(mut large) = grown.ok().flatten() else {
        return false;
    };
    std::mem::swap(buf, &mut large);
    large.clear();
    give_from(Kind::Recv, &mut large);
    true
}

/// Lets go of the thread's large buffers, so that a test can see who else
/// holds their allocations.
#[cfg(test)]
pub(crate) fn drop_large() {
    LARGE.with(|kept| kept.borrow_mut().clear());
}

/// How many large buffers the thread keeps, and their bytes in all.
#[cfg(test)]
pub(crate) fn kept_large() -> (usize, usize) {
    LARGE.with(|kept| {
        let kept = kept.borrow();
        (kept.len(), kept.iter().map(|&(_, size)| size).sum())
    })
}

/// How many buffers of `kind` the thread keeps.
#[cfg(test)]
pub(crate) fn kept(kind: Kind) -> usize {
    with(kind, |spare| Some(spare.len())).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unshared_buffers_of_a_useful_size_are_given_out() {
        // Shared with a payload still alive: not given out for its whole
        // allocation...
        let mut shared = BytesMut::with_capacity(4096);
        shared.extend_from_slice(b"payload");
        let payload = shared.split().freeze();
        give(Kind::Recv, shared);
        assert!(take(Kind::Recv, 4096, 4096).is_none());
        // ...and once the payload is gone, rewound to its start.
        let mut shared = BytesMut::with_capacity(4096);
        shared.extend_from_slice(b"payload");
        let payload2 = shared.split().freeze();
        give(Kind::Recv, shared);
        drop(payload2);
        let whole = take(Kind::Recv, 4096, 4096).expect("its own again");
        assert!(whole.capacity() >= 4096);
        drop(payload);

        // Shared, but with the room asked for after the payload's bytes:
        // given out as it is, at no cost.
        let mut shared = BytesMut::with_capacity(8192);
        shared.extend_from_slice(b"payload");
        let payload = shared.split().freeze();
        give(Kind::Recv, shared);
        let rest = take(Kind::Recv, 4096, 8192).expect("room left after the payload");
        assert_eq!(rest.capacity(), 8192 - payload.len());
        drop(payload);

        // Alone in its allocation: kept, and given back with its room.
        let mut alone = BytesMut::with_capacity(4096);
        alone.extend_from_slice(b"read and consumed");
        alone.clear();
        give(Kind::Recv, alone);
        let again = take(Kind::Recv, 4096, 4096).expect("kept");
        assert!(again.is_empty() && again.capacity() >= 4096);
        assert!(take(Kind::Recv, 1, 1).is_none(), "taken once");

        // Too small, too large, or asked for more room than it has.
        give(Kind::Send, BytesMut::with_capacity(16));
        give(Kind::Send, BytesMut::with_capacity(MAX_LEN + 1));
        assert!(take(Kind::Send, 1, 1).is_none());
        give(Kind::Send, BytesMut::with_capacity(2048));
        assert!(take(Kind::Send, 2048, 2048).is_some());
        give(Kind::Send, BytesMut::with_capacity(2048));
        assert!(take(Kind::Send, 4096, 4096).is_none());
    }

    #[test]
    fn a_thread_keeps_a_bounded_number() {
        for _ in 0..KEEP * 3 {
            give(Kind::Recv, BytesMut::with_capacity(4096));
        }
        let mut kept = 0;
        while take(Kind::Recv, 1, 1).is_some() {
            kept += 1;
        }
        assert_eq!(kept, KEEP);
    }
}
