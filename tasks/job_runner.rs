// One job of a batch launch (tasks/batch_script.py), started by the launch's root shell:
//
//     job-runner UID|- DEADLINE_S DIR PROGRAM [ARGS...]
//
// Drops root to UID for good (no capabilities in any set, no new privileges, no groups), enters
// DIR, writes the start marker `L` to fd 3 and closes it, runs PROGRAM in a process group of its
// own with TMPDIR=DIR, kills that group at the deadline, then kills every process UID has left.
// Exit status: the program's (128 + N when signal N killed it); 124 when the deadline cut it;
// 125 when the drop failed (no marker is written then); 126/127 when PROGRAM cannot be started.
//
// It does what `setpriv … -- sh -c 'printf L >&3; timeout -s KILL D "$@"; kill -KILL -1'` did in
// one process instead of four. Compiled by ferrisbench itself with the toolchain's rustc.

use std::ffi::{c_int, c_uint, c_ulong};
use std::io::Write;
use std::os::unix::io::FromRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{exit, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

extern "C" {
    fn prctl(option: c_int, arg2: c_ulong, arg3: c_ulong, arg4: c_ulong, arg5: c_ulong) -> c_int;
    fn setgroups(size: usize, list: *const c_uint) -> c_int;
    fn setresgid(rgid: c_uint, egid: c_uint, sgid: c_uint) -> c_int;
    fn setresuid(ruid: c_uint, euid: c_uint, suid: c_uint) -> c_int;
    fn getresuid(ruid: *mut c_uint, euid: *mut c_uint, suid: *mut c_uint) -> c_int;
    fn capset(header: *mut CapHeader, data: *mut CapData) -> c_int;
    fn kill(pid: c_int, sig: c_int) -> c_int;
}

const PR_CAPBSET_DROP: c_int = 24;
const PR_SET_NO_NEW_PRIVS: c_int = 38;
const PR_CAP_AMBIENT: c_int = 47;
const PR_CAP_AMBIENT_CLEAR_ALL: c_ulong = 4;
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;
const SIGKILL: c_int = 9;

fn fail(code: i32, what: &str) -> ! {
    let _ = writeln!(std::io::stderr(), "job-runner: {what}: {}", std::io::Error::last_os_error());
    exit(code)
}

fn drop_to(uid: c_uint) {
    unsafe {
        for cap in 0..64 {
            prctl(PR_CAPBSET_DROP, cap, 0, 0, 0); // EINVAL past the last capability: ignored
        }
        if setgroups(0, std::ptr::null()) != 0 {
            fail(125, "setgroups");
        }
        if setresgid(uid, uid, uid) != 0 {
            fail(125, "setresgid");
        }
        if setresuid(uid, uid, uid) != 0 {
            fail(125, "setresuid");
        }
        let (mut r, mut e, mut s) = (0, 0, 0);
        if getresuid(&mut r, &mut e, &mut s) != 0 || (r, e, s) != (uid, uid, uid) {
            fail(125, "uid check");
        }
        let mut header = CapHeader { version: CAPABILITY_VERSION_3, pid: 0 };
        let mut data = [CapData { effective: 0, permitted: 0, inheritable: 0 }; 2];
        if capset(&mut header, data.as_mut_ptr()) != 0 {
            fail(125, "capset");
        }
        if prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 {
            fail(125, "clearing ambient capabilities");
        }
        if prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            fail(125, "no_new_privs");
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        let _ = writeln!(std::io::stderr(), "usage: job-runner UID|- DEADLINE_S DIR PROGRAM [ARGS...]");
        exit(125);
    }
    let uid: Option<c_uint> = if args[1] == "-" {
        None
    } else {
        Some(args[1].parse().unwrap_or_else(|_| fail(125, "bad uid")))
    };
    let deadline: f64 = args[2].parse().unwrap_or_else(|_| fail(125, "bad deadline"));
    let dir = &args[3];
    if let Some(uid) = uid {
        drop_to(uid);
    }
    if std::env::set_current_dir(dir).is_err() {
        fail(125, "cannot enter the job's directory");
    }
    {
        let mut marker = unsafe { std::fs::File::from_raw_fd(3) }; // closed when it goes out of scope
        if marker.write_all(b"L").is_err() {
            fail(125, "start marker");
        }
    }
    let mut command = Command::new(&args[4]);
    command.args(&args[5..]).env_remove("PWD").env_remove("OLDPWD").env("TMPDIR", dir).process_group(0);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => {
            let _ = writeln!(std::io::stderr(), "job-runner: {}: {error}", args[4]);
            exit(if error.kind() == std::io::ErrorKind::NotFound { 127 } else { 126 })
        }
    };
    let group = child.id() as c_int;
    let done = Arc::new(AtomicBool::new(false));
    let cut = Arc::new(AtomicBool::new(false));
    let watch = {
        let (done, cut) = (done.clone(), cut.clone());
        let until = Instant::now() + Duration::from_secs_f64(deadline.max(0.0));
        std::thread::spawn(move || loop {
            if done.load(Ordering::SeqCst) {
                return;
            }
            let now = Instant::now();
            if now >= until {
                cut.store(true, Ordering::SeqCst);
                unsafe { kill(-group, SIGKILL) };
                return;
            }
            std::thread::park_timeout(until - now);
        })
    };
    let status = child.wait().unwrap_or_else(|_| fail(125, "wait"));
    done.store(true, Ordering::SeqCst);
    watch.thread().unpark();
    let _ = watch.join();
    let code = if cut.load(Ordering::SeqCst) {
        124
    } else if let Some(signal) = status.signal() {
        128 + signal
    } else {
        status.code().unwrap_or(125)
    };
    if uid.is_some() {
        unsafe { kill(-1, SIGKILL) }; // as the job's uid: reaches its leftovers only, never this process
    }
    exit(code)
}
