"""I/O floor for the FP8 -> BF16 rewrite benchmark (stdlib only, no imports beyond os/sys/mmap).

    python benchmarks/io_floor.py SRC DST OUT_BYTES [--direct]

Reads every byte of every regular file directly in SRC (sorted by name) with
1 MiB ``readinto`` calls into one reusable buffer and, interleaved in
proportion to what has been read, writes OUT_BYTES bytes taken from that buffer
to DST/io_floor.bin with unbuffered 1 MiB writes (no fsync, like the peers:
safetensors and MLX do not fsync either). No parsing, no conversion: only the
bytes any rewrite has to move, single-threaded. (64 MiB chunks were 2-4x slower
on the 2-core VM this was written on: a chunk that does not fit in cache makes
every copy go through memory; 1 MiB was the fastest of 1/4/8/64.)

``--direct``: the same, with O_DIRECT reads and writes (page-aligned buffer from mmap,
the last write padded to 4 KiB and the file truncated back), the page cache skipped as
scalefix skips it: the floor for a tool that does that, still one thread, one I/O at a time.
"""
import mmap
import os
import sys

CHUNK = 1 << 20


def io_floor(src, dst, out_bytes):
    os.makedirs(dst, exist_ok=True)
    files = sorted(os.path.join(src, n) for n in os.listdir(src) if os.path.isfile(os.path.join(src, n)))
    in_bytes = sum(os.path.getsize(p) for p in files) or 1
    buf = bytearray(CHUNK)
    mv = memoryview(buf)
    read = written = 0
    with open(os.path.join(dst, "io_floor.bin"), "wb", buffering=0) as out:
        def catch_up(w, target):
            while w < target:
                w += out.write(mv[: min(CHUNK, target - w)])
            return w
        for p in files:
            with open(p, "rb", buffering=0) as f:
                while True:
                    n = f.readinto(buf)
                    if not n:
                        break
                    read += n
                    written = catch_up(written, out_bytes * read // in_bytes)
        catch_up(written, out_bytes)


def io_floor_direct(src, dst, out_bytes):
    os.makedirs(dst, exist_ok=True)
    files = sorted(os.path.join(src, n) for n in os.listdir(src) if os.path.isfile(os.path.join(src, n)))
    in_bytes = sum(os.path.getsize(p) for p in files) or 1
    buf = mmap.mmap(-1, CHUNK)  # page-aligned, as O_DIRECT needs
    mv = memoryview(buf)
    read = written = 0
    out_path = os.path.join(dst, "io_floor.bin")
    out = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o644)
    try:
        def catch_up(w, target, last=False):
            if not last:  # whole chunks keep every offset aligned; only the last is padded
                target -= target % CHUNK
            while w < target:
                n = min(CHUNK, target - w)
                w += min(n, os.pwrite(out, mv[: -(-n // 4096) * 4096], w))
            return w
        for p in files:
            fd = os.open(p, os.O_RDONLY | os.O_DIRECT)
            try:
                offset = 0
                while True:
                    n = os.preadv(fd, [mv], offset)
                    if not n:
                        break
                    offset += n
                    read += n
                    written = catch_up(written, out_bytes * read // in_bytes)
            finally:
                os.close(fd)
        catch_up(written, out_bytes, last=True)
        os.ftruncate(out, out_bytes)
    finally:
        os.close(out)


if __name__ == "__main__":
    run = io_floor_direct if "--direct" in sys.argv[4:] else io_floor
    run(sys.argv[1], sys.argv[2], int(sys.argv[3]))
