//! The wake-up protocol of idle pollers, in one place.
//!
//! A poller ([`crate::poller`]) works in rounds and, when a round finds
//! nothing to do, sleeps until someone wakes it. Work reaches it from many
//! threads: a sender queues a frame on a lane and asks the lane's poller for
//! a flush ([`crate::lane_writer`]), the driver attaches or closes a
//! connection, a socket of the poller becomes readable or writable. This
//! module holds the whole protocol that makes sure such work is never left
//! waiting by a sleeping poller, and that a busy poller costs the threads
//! that hand it work nothing but a queue push:
//!
//! 1. **The idle flag** ([`Wakeup`], one per poller). A round starts by
//!    clearing it ([`Wakeup::busy`]). A poller about to sleep first sets it,
//!    then looks once more for work ([`Wakeup::try_idle`], called by
//!    [`crate::Poller::try_idle`], which checks its inbox and flush
//!    requests): if work arrived meanwhile and the poller takes the flag
//!    back, it polls again instead of sleeping.
//! 2. **Waking** ([`Wakeup::wake`]). Whoever adds work first pushes it
//!    (inbox, flush list), then swaps the flag to false: only the one that
//!    finds it set sends the wake-up ([`Wakeup::notify`]). So either the
//!    poller's second look sees the work, or the adder sees the flag and
//!    wakes it: no wake-up is lost (both sides use sequentially consistent
//!    operations on the one flag), and at most one is sent per sleep.
//! 3. **How a wake-up travels** depends on who drives the poller:
//!    - a *threaded* poller (`io => threads`, and the bulk pollers of
//!      `io => auto`) blocks in `epoll_wait` in [`crate::Poller::park`]; a
//!      wake-up is a write to its `mio::Waker` (an eventfd in its own set);
//!    - a *driven* poller (`io => schedulers | auto`) is driven by an
//!      Erlang process, `src/weft_poller.erl`, which calls the `poll` NIF
//!      (`native/weft_nif/src/lib.rs`) one round at a time. When the round
//!      is idle, the NIF first registers the calling process as the
//!      poller's driver (`NifSink::register_poller` in
//!      `native/weft_nif/src/events.rs`), then calls `try_idle`; on `true`
//!      it returns `wait` and the process blocks in `receive {weft_poll,
//!      wake}`. A wake-up goes through [`Notify`] (implemented by the
//!      transport's shared state, `crate::Shared`) to
//!      [`crate::Sink::wake_poller`], which the NIF implements
//!      (`NifSink::wake_poller`, `events.rs`) as an `enif_send` of
//!      `{weft_poll, wake}` to the registered process. After a wake-up the
//!      process drains any further `{weft_poll, wake}` messages
//!      (`weft_poller:drain/0`): the next round sees all their work anyway.
//!      The registration happens before `try_idle`, so a wake-up that
//!      follows the flag always finds the process to send to.
//! 4. **Socket events of driven pollers** ([`Watcher`]). Nobody blocks in a
//!    driven poller's epoll set, so one watcher thread (`weft-watch`) does
//!    it for all of them, as the VM's own poll thread does for
//!    `enif_select`: each driven poller's epoll descriptor is in the
//!    watcher's set with `EPOLLONESHOT`, re-armed by `try_idle` after the
//!    flag is set. Re-arming looks at the set as it is now, so an event that
//!    came since the last round is reported at once; the watcher then calls
//!    [`Wakeup::wake`], which takes the flag like any other adder of work.
//!    A busy poller is never armed, so it costs the watcher nothing, and an
//!    idle one is woken once per event.
//! 5. **Stopping**: [`crate::Poller::stop`] sets the stopped flag and then
//!    wakes the poller; `try_idle` counts "stopped" as pending work, so a
//!    poller about to sleep either sees the flag or is woken.
//!
//! A poller that just moved small frames does not sleep at once: it
//! lingers (`Outcome::Linger`, policy in `weft_core::placement`), polling
//! again after others ran, because finding the next frame by polling is
//! much cheaper than being woken for it.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};

/// Who sends the wake-up of a driven poller (scheduler mode): the
/// transport's shared state, which passes it to
/// [`crate::Sink::wake_poller`]. A trait so that this module, low in the
/// transport, does not depend on the transport's root.
pub(crate) trait Notify: Send + Sync {
    /// Poller `index` has work and its driver is waiting: wake it.
    fn wake_poller(&self, index: usize);
}

/// The wake-up state of one poller: its idle flag and how to reach it.
pub(crate) struct Wakeup {
    index: usize,
    /// The poller's epoll descriptor (the watcher waits on it).
    fd: RawFd,
    /// Set by the poller before it sleeps; taken by whoever wakes it.
    idle: AtomicBool,
    /// Threaded pollers: the eventfd in their own set.
    waker: Option<mio::Waker>,
    /// Driven pollers: who sends the wake-up to their process (the
    /// transport, weakly: a wake-up after it is gone goes nowhere).
    notify: OnceLock<Weak<dyn Notify>>,
    /// Driven pollers: the watcher that wakes them on socket events.
    watcher: OnceLock<Arc<Watcher>>,
}

impl Wakeup {
    /// The wake-up state of poller `index` whose epoll set is `fd`;
    /// `waker` for a threaded poller, `None` for a driven one.
    pub(crate) fn new(index: usize, fd: RawFd, waker: Option<mio::Waker>) -> Arc<Wakeup> {
        Arc::new(Wakeup {
            index,
            fd,
            idle: AtomicBool::new(false),
            waker,
            notify: OnceLock::new(),
            watcher: OnceLock::new(),
        })
    }

    /// Whether the poller is woken through its own eventfd (a thread).
    pub(crate) fn is_threaded(&self) -> bool {
        self.waker.is_some()
    }

    /// Driven pollers: who sends their wake-ups.
    pub(crate) fn set_notify(&self, notify: Weak<dyn Notify>) {
        let _ = self.notify.set(notify);
    }

    /// Driven pollers: the watcher that wakes this poller on socket events.
    pub(crate) fn set_watcher(&self, w: Arc<Watcher>) -> std::io::Result<()> {
        w.add(self)?;
        let _ = self.watcher.set(w);
        Ok(())
    }

    /// The poller is working (or about to): wake-ups are not needed.
    pub(crate) fn busy(&self) {
        self.idle.store(false, Ordering::SeqCst);
    }

    /// Whether the idle flag is set (for tests).
    #[cfg(test)]
    pub(crate) fn is_idle(&self) -> bool {
        self.idle.load(Ordering::SeqCst)
    }

    /// Wake the poller if it is idle (or about to be).
    pub(crate) fn wake(&self) {
        if self.idle.swap(false, Ordering::AcqRel) {
            self.notify();
        }
    }

    /// Send the wake-up, whether or not it is needed.
    fn notify(&self) {
        match &self.waker {
            Some(w) => {
                let _ = w.wake();
            }
            None => {
                if let Some(n) = self.notify.get().and_then(Weak::upgrade) {
                    n.wake_poller(self.index);
                }
            }
        }
    }

    /// Set the idle flag unless `pending()` says work arrived meanwhile;
    /// `false` means it did (poll again). After `true`, whoever adds work
    /// wakes the poller.
    pub(crate) fn try_idle(&self, pending: impl FnOnce() -> bool) -> bool {
        self.idle.store(true, Ordering::SeqCst);
        if let Some(w) = self.watcher.get() {
            // Re-arming looks at the set as it is now: an event that came
            // since the last round is reported at once.
            w.arm(self);
        }
        if pending() && self.idle.swap(false, Ordering::AcqRel) {
            return false;
        }
        true
    }
}

/// The watcher of a transport's driven pollers.
pub(crate) struct Watcher {
    epfd: RawFd,
    stop_fd: RawFd,
    stop: AtomicBool,
}

/// Token of the watcher's stop event.
const STOP: u64 = u64::MAX;

impl Watcher {
    pub(crate) fn new() -> std::io::Result<Arc<Watcher>> {
        // SAFETY: plain system calls; the descriptors are owned by the watcher.
        let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epfd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stop_fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if stop_fd < 0 {
            let e = std::io::Error::last_os_error();
            unsafe { libc::close(epfd) };
            return Err(e);
        }
        let w = Arc::new(Watcher {
            epfd,
            stop_fd,
            stop: AtomicBool::new(false),
        });
        w.ctl(libc::EPOLL_CTL_ADD, stop_fd, STOP, libc::EPOLLIN as u32)?;
        Ok(w)
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, token: u64, events: u32) -> std::io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: valid descriptors and event.
        if unsafe { libc::epoll_ctl(self.epfd, op, fd, &mut ev) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Add a poller's epoll set, disarmed (its poller arms it when idle).
    fn add(&self, w: &Wakeup) -> std::io::Result<()> {
        self.ctl(
            libc::EPOLL_CTL_ADD,
            w.fd,
            w.index as u64,
            libc::EPOLLONESHOT as u32,
        )
    }

    /// Report the next event of `w`'s set (once).
    fn arm(&self, w: &Wakeup) {
        let _ = self.ctl(
            libc::EPOLL_CTL_MOD,
            w.fd,
            w.index as u64,
            (libc::EPOLLIN | libc::EPOLLONESHOT) as u32,
        );
    }

    /// End the thread that runs `run`.
    pub(crate) fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let one: u64 = 1;
        // SAFETY: writing 8 bytes to our eventfd.
        unsafe { libc::write(self.stop_fd, (&one as *const u64).cast(), 8) };
    }

    /// The watcher thread's loop: wake the poller whose set has an event
    /// (`pollers` in the order of their index), until [`Watcher::shutdown`].
    pub(crate) fn run(&self, pollers: Vec<Arc<Wakeup>>) {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 64];
        while !self.stop.load(Ordering::Acquire) {
            // SAFETY: a buffer of 64 events.
            let n = unsafe { libc::epoll_wait(self.epfd, events.as_mut_ptr(), 64, -1) };
            for ev in events.iter().take(n.max(0) as usize) {
                let token = ev.u64;
                if token != STOP {
                    if let Some(p) = pollers.get(token as usize) {
                        p.wake();
                    }
                }
            }
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        // SAFETY: our own descriptors, closed once.
        unsafe {
            libc::close(self.stop_fd);
            libc::close(self.epfd);
        }
    }
}
