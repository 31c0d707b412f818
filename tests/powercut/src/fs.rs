//! The FUSE side: a passthrough to a backing directory that records, in the journal,
//! everything a power cut would take away.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use crate::journal::Journal;

const TTL: Duration = Duration::from_secs(0);

pub struct State {
    pub journal: Journal,
    root: PathBuf,
    /// inode → path relative to the root (the root is inode 1, path "").
    inodes: HashMap<u64, PathBuf>,
    next_ino: u64,
    handles: HashMap<u64, (u64, File)>,
    next_fh: u64,
}

pub struct PowerCutFs {
    pub state: Arc<Mutex<State>>,
}

fn errno(e: io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

impl PowerCutFs {
    pub fn new(root: &Path, journal: Journal) -> PowerCutFs {
        let mut inodes = HashMap::new();
        inodes.insert(1, PathBuf::new());
        PowerCutFs {
            state: Arc::new(Mutex::new(State {
                journal,
                root: root.to_path_buf(),
                inodes,
                next_ino: 2,
                handles: HashMap::new(),
                next_fh: 1,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl State {
    fn rel(&self, ino: INodeNo) -> Result<PathBuf, Errno> {
        self.inodes.get(&ino.0).cloned().ok_or(Errno::ENOENT)
    }

    fn child(&self, parent: INodeNo, name: &OsStr) -> Result<PathBuf, Errno> {
        Ok(self.rel(parent)?.join(name))
    }

    /// The inode of `rel`, assigning one on first sight.
    fn ino_for(&mut self, rel: &Path) -> u64 {
        if let Some((ino, _)) = self.inodes.iter().find(|(_, p)| p.as_path() == rel) {
            return *ino;
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.inodes.insert(ino, rel.to_path_buf());
        self.journal.track(ino, rel);
        ino
    }

    fn attr(&mut self, rel: &Path) -> Result<FileAttr, Errno> {
        let meta = fs::symlink_metadata(self.root.join(rel)).map_err(errno)?;
        let ino = if rel.as_os_str().is_empty() {
            1
        } else {
            self.ino_for(rel)
        };
        let time = |secs: i64| UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64);
        Ok(FileAttr {
            ino: INodeNo(ino),
            size: meta.len(),
            blocks: meta.blocks(),
            atime: time(meta.atime()),
            mtime: time(meta.mtime()),
            ctime: time(meta.ctime()),
            crtime: time(meta.ctime()),
            kind: if meta.is_dir() {
                FileType::Directory
            } else {
                FileType::RegularFile
            },
            perm: (meta.mode() & 0o7777) as u16,
            nlink: meta.nlink() as u32,
            uid: meta.uid(),
            gid: meta.gid(),
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    /// Renames the tracked paths of `from` and below.
    fn move_inodes(&mut self, from: &Path, to: &Path) {
        for path in self.inodes.values_mut() {
            if let Ok(rest) = path.strip_prefix(from) {
                *path = if rest.as_os_str().is_empty() {
                    to.to_path_buf()
                } else {
                    to.join(rest)
                };
            }
        }
    }

    fn open_handle(&mut self, ino: u64, file: File) -> u64 {
        let fh = self.next_fh;
        self.next_fh += 1;
        self.handles.insert(fh, (ino, file));
        fh
    }
}

impl Filesystem for PowerCutFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut s = self.lock();
        match s.child(parent, name).and_then(|rel| s.attr(&rel)) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let mut s = self.lock();
        match s.rel(ino).and_then(|rel| s.attr(&rel)) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut s = self.lock();
        let result = (|| {
            let rel = s.rel(ino)?;
            if let Some(size) = size {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(s.root.join(&rel))
                    .map_err(errno)?;
                s.journal
                    .before_set_len(ino.0, &file, size)
                    .map_err(errno)?;
                file.set_len(size).map_err(errno)?;
            }
            s.attr(&rel)
        })();
        match result {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let mut s = self.lock();
        let result = (|| {
            let rel = s.child(parent, name)?;
            fs::create_dir(s.root.join(&rel)).map_err(errno)?;
            let _ = mode;
            let ino = s.ino_for(&rel);
            s.journal.created(ino, &rel);
            s.attr(&rel)
        })();
        match result {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut s = self.lock();
        let result = (|| {
            let rel = s.child(parent, name)?;
            let ino = s.ino_for(&rel);
            s.journal.remove(ino, &rel).map_err(errno)?;
            s.inodes.remove(&ino);
            Ok(())
        })();
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let empty = {
            let s = self.lock();
            s.child(parent, name)
                .ok()
                .and_then(|rel| fs::read_dir(s.root.join(rel)).ok())
                .is_some_and(|mut d| d.next().is_none())
        };
        if !empty {
            reply.error(Errno::ENOTEMPTY);
            return;
        }
        self.unlink(req, parent, name, reply);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut s = self.lock();
        let result = (|| {
            let from = s.child(parent, name)?;
            let to = s.child(newparent, newname)?;
            let ino = s.ino_for(&from);
            let displaced = if s.root.join(&to).exists() {
                let d = s.ino_for(&to);
                s.inodes.remove(&d);
                Some(d)
            } else {
                None
            };
            s.journal
                .rename(ino, &from, &to, displaced)
                .map_err(errno)?;
            s.move_inodes(&from, &to);
            Ok(())
        })();
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mut s = self.lock();
        let result = (|| {
            let rel = s.rel(ino)?;
            let writable = flags.0 & libc::O_ACCMODE != libc::O_RDONLY;
            let file = OpenOptions::new()
                .read(true)
                .write(writable)
                .open(s.root.join(&rel))
                .map_err(errno)?;
            if flags.0 & libc::O_TRUNC != 0 {
                s.journal.before_set_len(ino.0, &file, 0).map_err(errno)?;
                file.set_len(0).map_err(errno)?;
            }
            Ok(s.open_handle(ino.0, file))
        })();
        match result {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut s = self.lock();
        let result = (|| {
            let rel = s.child(parent, name)?;
            let path = s.root.join(&rel);
            let existed = path.exists();
            if existed && flags & libc::O_EXCL != 0 {
                return Err(Errno::EEXIST);
            }
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(errno)?;
            let ino = s.ino_for(&rel);
            if !existed {
                s.journal.created(ino, &rel);
            } else if flags & libc::O_TRUNC != 0 {
                s.journal.before_set_len(ino, &file, 0).map_err(errno)?;
                file.set_len(0).map_err(errno)?;
            }
            let fh = s.open_handle(ino, file);
            Ok((s.attr(&rel)?, fh))
        })();
        match result {
            Ok((attr, fh)) => reply.created(
                &TTL,
                &attr,
                Generation(0),
                FileHandle(fh),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let s = self.lock();
        let Some((_, file)) = s.handles.get(&fh.0) else {
            reply.error(Errno::EBADF);
            return;
        };
        let mut buf = vec![0u8; size as usize];
        let mut filled = 0;
        while filled < buf.len() {
            match file.read_at(&mut buf[filled..], offset + filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) => {
                    reply.error(errno(e));
                    return;
                }
            }
        }
        reply.data(&buf[..filled]);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut guard = self.lock();
        let s = &mut *guard;
        let Some((ino, file)) = s.handles.get(&fh.0) else {
            reply.error(Errno::EBADF);
            return;
        };
        let result = s
            .journal
            .before_write(*ino, file, offset, data.len() as u64)
            .and_then(|_| file.write_all_at(data, offset));
        match result {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.lock().handles.remove(&fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.lock().journal.file_synced(ino.0);
        reply.ok();
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(0), FopenFlags::empty());
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let mut s = self.lock();
        let Ok(rel) = s.rel(ino) else {
            reply.error(Errno::ENOENT);
            return;
        };
        let entries = match fs::read_dir(s.root.join(&rel)) {
            Ok(d) => d,
            Err(e) => {
                reply.error(errno(e));
                return;
            }
        };
        let mut list: Vec<(u64, FileType, std::ffi::OsString)> = vec![
            (ino.0, FileType::Directory, ".".into()),
            (1, FileType::Directory, "..".into()),
        ];
        let mut names: Vec<_> = entries.filter_map(|e| e.ok()).collect();
        names.sort_by_key(|e| e.file_name());
        for entry in names {
            let child = rel.join(entry.file_name());
            let kind = match entry.file_type() {
                Ok(t) if t.is_dir() => FileType::Directory,
                _ => FileType::RegularFile,
            };
            let child_ino = s.ino_for(&child);
            list.push((child_ino, kind, entry.file_name()));
        }
        for (i, (child, kind, name)) in list.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(child), (i + 1) as u64, kind, &name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut s = self.lock();
        let result = s
            .rel(ino)
            .and_then(|rel| s.journal.dir_synced(&rel).map_err(errno));
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let s = self.lock();
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        let path =
            std::ffi::CString::new(s.root.as_os_str().as_encoded_bytes()).unwrap_or_default();
        // SAFETY: `path` is a valid C string and `st` a properly sized out-parameter.
        if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
            reply.error(Errno::EIO);
            return;
        }
        reply.statfs(
            st.f_blocks as u64,
            st.f_bfree as u64,
            st.f_bavail as u64,
            st.f_files as u64,
            st.f_ffree as u64,
            st.f_bsize as u32,
            st.f_namemax as u32,
            st.f_frsize as u32,
        );
    }
}
