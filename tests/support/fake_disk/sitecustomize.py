"""A small disk, faked, for machines where the tests cannot mount a tmpfs (no CAP_SYS_ADMIN
and no user namespaces: a typical unprivileged container).

With ``SCALEFIX_FAKE_DISK=DIR:BYTES`` in the environment and this folder on PYTHONPATH, DIR
behaves like a filesystem of BYTES: ``os.statvfs`` of a path under DIR reports what is left
(BYTES minus the sizes of the files below DIR), and ``os.pwrite`` / ``os.write`` that would
grow a file below DIR past that raise ``OSError(ENOSPC)`` as the kernel would; so do files
opened with ``open(path, "wb")`` below DIR (how the MLX writer writes its shards). Those carry
nearly every byte of a rewrite; the small writes of markers, config and copied files are not
limited, which the tmpfs tests cover for real.
"""

import builtins
import errno
import io
import os

_spec = os.environ.get("SCALEFIX_FAKE_DISK")
if _spec:
    _root, _, _size = _spec.rpartition(":")
    _root, _size = os.path.realpath(_root), int(_size)
    _BLOCK = 4096
    _statvfs, _pwrite, _write = os.statvfs, os.pwrite, os.write

    def _inside(path) -> bool:
        real = os.path.realpath(path)
        return real == _root or real.startswith(_root + os.sep)

    def _used() -> int:
        return sum(os.stat(os.path.join(folder, f)).st_size
                   for folder, _, files in os.walk(_root) for f in files)

    def _fd_path(fd: int) -> str:
        try:
            return os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return ""

    def statvfs(path):
        real = _statvfs(path)
        if not (isinstance(path, (str, bytes, os.PathLike)) and _inside(path)):
            return real
        free = max(0, _size - _used()) // _BLOCK
        return os.statvfs_result((_BLOCK, _BLOCK, _size // _BLOCK, free, free) + tuple(real)[5:])

    def _check(fd: int, length: int, offset: int | None) -> None:
        path = _fd_path(fd)
        if not _inside(path):
            return
        size = os.fstat(fd).st_size
        end = (offset if offset is not None else os.lseek(fd, 0, os.SEEK_CUR)) + length
        if _used() + max(0, end - size) > _size:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def pwrite(fd, data, offset):
        _check(fd, memoryview(data).nbytes, offset)
        return _pwrite(fd, data, offset)

    def write(fd, data):
        _check(fd, memoryview(data).nbytes, None)
        return _write(fd, data)

    class _LimitedFile(io.FileIO):
        """A binary file whose writes go through the limited ``write``."""

        def write(self, data):
            return write(self.fileno(), data)

    _open = builtins.open

    def limited_open(file, mode="r", buffering=-1, *args, **kwargs):
        if mode in ("wb", "xb", "ab") and isinstance(file, (str, os.PathLike)) \
                and _inside(file) and not args and not kwargs:
            raw = _LimitedFile(file, mode)
            return raw if buffering == 0 else io.BufferedWriter(raw)
        return _open(file, mode, buffering, *args, **kwargs)

    os.statvfs, os.pwrite, os.write, builtins.open = statvfs, pwrite, write, limited_open
