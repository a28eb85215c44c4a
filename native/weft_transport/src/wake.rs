//! The watcher: one thread that wakes idle driven pollers when a socket of
//! theirs becomes ready, as the VM's own poll thread does for `enif_select`.
//!
//! Each driven poller's epoll set is in the watcher's set with
//! `EPOLLONESHOT`, armed again only when the poller goes idle
//! ([`Poller::try_idle`]): a busy poller costs the watcher nothing, and an
//! idle one is woken once per event.

use crate::poller::Poller;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

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
    pub(crate) fn add(&self, p: &Poller) -> std::io::Result<()> {
        self.ctl(
            libc::EPOLL_CTL_ADD,
            p.fd(),
            p.index() as u64,
            libc::EPOLLONESHOT as u32,
        )
    }

    /// Report the next event of `p`'s set (once).
    pub(crate) fn arm(&self, p: &Poller) {
        let _ = self.ctl(
            libc::EPOLL_CTL_MOD,
            p.fd(),
            p.index() as u64,
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

    pub(crate) fn run(&self, pollers: Vec<Arc<Poller>>) {
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
