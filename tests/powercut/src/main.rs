//! powercut-fs — a test tool that simulates power cuts for tern's tests.
//!
//!     powercut-fs BACKING_DIR MOUNTPOINT
//!
//! Mounts MOUNTPOINT as a passthrough to BACKING_DIR, journaling every write and directory
//! change that was not yet fsynced. Then, on a signal:
//! - SIGUSR1: power cut — unmount and drop everything unsynced (clean cut);
//! - SIGUSR2: torn power cut — unmount; a random prefix of the unsynced writes survives,
//!   the last torn at a random byte (seed from $POWERCUT_SEED, default the time);
//! - SIGTERM / SIGINT: unmount keeping everything (a clean shutdown).
//!
//! It prints what it dropped and exits. Stop the program using the mount (kill -9) first.

mod fs;
mod journal;

use std::path::PathBuf;
use std::process::ExitCode;

use journal::{CutMode, Journal};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: powercut-fs BACKING_DIR MOUNTPOINT");
        return ExitCode::from(2);
    }
    let backing = PathBuf::from(&args[1]);
    let mountpoint = PathBuf::from(&args[2]);
    let trash = backing.with_extension("powercut-trash");
    match run(&backing, &mountpoint, &trash) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("powercut-fs: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(
    backing: &std::path::Path,
    mountpoint: &std::path::Path,
    trash: &std::path::Path,
) -> std::io::Result<()> {
    // Signals are blocked in every thread and taken by sigwait below.
    // SAFETY: plain libc signal-mask calls on a zero-initialised sigset_t.
    let signals = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGUSR1, libc::SIGUSR2, libc::SIGTERM, libc::SIGINT] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    let journal = Journal::new(backing, trash)?;
    let filesystem = fs::PowerCutFs::new(backing, journal);
    let state = std::sync::Arc::clone(&filesystem.state);
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName("powercut".to_string()),
        fuser::MountOption::CUSTOM("max_read=1048576".to_string()),
    ];
    let session = fuser::Session::new(filesystem, mountpoint, &config)?;
    let background = session.spawn()?;
    println!("mounted {}", mountpoint.display());
    let mut signal = 0;
    // SAFETY: `signals` is the set blocked above.
    unsafe {
        libc::sigwait(&signals, &mut signal);
    }
    // The session thread may end with ECONNABORTED/ENODEV when the kernel drops the mount
    // under it: that is the unmount we asked for. The cut is applied regardless.
    if let Err(e) = background.umount_and_join() {
        let expected = matches!(
            e.raw_os_error(),
            Some(libc::ECONNABORTED) | Some(libc::ENODEV)
        );
        if !expected {
            eprintln!("powercut-fs: unmount reported: {e}");
        }
    }
    let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
    let mode = match signal {
        libc::SIGUSR1 => Some(CutMode::Clean),
        libc::SIGUSR2 => Some(CutMode::Torn {
            seed: std::env::var("POWERCUT_SEED")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| std::process::id() as u64),
        }),
        _ => None,
    };
    match mode {
        Some(mode) => {
            let report = state.journal.cut(mode)?;
            println!(
                "power cut ({mode:?}): {} writes lost, {} torn, {} directory changes lost",
                report.writes_lost, report.torn_writes, report.dir_changes_lost
            );
        }
        None => {
            state.journal.keep_all()?;
            println!("unmounted, everything kept");
        }
    }
    Ok(())
}
